"""Installs pyramidnet-tf.

TensorFlow comes through an extra because its CPU and GPU wheels both install
the same `tensorflow` package and must never be installed side by side:

    pip install -e '.[cpu]'        # tensorflow-cpu==2.21.0 (CI, laptops)
    pip install -e '.[gpu]'        # tensorflow[and-cuda]==2.21.0 (GPU hosts)
    pip install -e '.[cpu,test]'   # + pytest, torch==2.13.0 (CPU), scikit-learn, ruff for the tests
    pip install -e '.[cpu,profile]'  # + TensorBoard's Profile tab (--profile_steps traces)
"""

import setuptools

TF_VERSION = "2.21.0"
# TensorBoard's Profile tab: 2.24.2 installs beside tensorflow 2.21.0 and
# tensorboard 2.21.0 without changing them or protobuf (checked in a clean
# virtualenv) and reads TF 2.21's XPlane traces; the plugin package is a
# shim over xprof, pinned to the same release.
PROFILE = ["tensorboard-plugin-profile==2.24.2", "xprof==2.24.2"]

setuptools.setup(
    name="pyramidnet-tf",
    version="0.1.0",
    description="PyramidNet (Han, Kim & Kim, CVPR 2017) in TensorFlow 2, without Keras.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",  # README and CI: 3.11
    packages=setuptools.find_packages(
        include=["pyramidnet_tf", "pyramidnet_tf.*", "data_prep", "data_prep.*"]) +
    ["pyramidnet_tf.recipes"],
    # The flagfiles (one per paper row and recipe) ship inside the package, so
    # --recipe=NAME and --flagfile=flags/... work after a plain pip install.
    package_dir={"pyramidnet_tf.recipes": "flags"},
    package_data={"pyramidnet_tf.recipes": ["*.flags", "*/*.flags"]},
    install_requires=[
        "absl-py>=2.1,<3",
        "numpy>=1.26,<3",
        "tensorboard==2.21.0",
        "tensorflow-datasets==4.9.10",
        # Exact: repaired images are re-encoded by Pillow's libjpeg-turbo, and
        # data_prep promises byte-identical shards across machines.
        "pillow==13.0.0",
        "protobuf>=5.28",
        "scipy==1.17.1",  # the ILSVRC devkit's meta.mat
    ],
    extras_require={
        "cpu": [f"tensorflow-cpu=={TF_VERSION}"],
        "gpu": [f"tensorflow[and-cuda]=={TF_VERSION}"],
        # The tests check the Profile tab too (tests/cli/test_tensorboard.py).
        "test": ["pytest>=8,<10", "torch==2.13.0", "scikit-learn==1.8.0",
                 "pyyaml==6.0.4", "ruff==0.17.6", "pytest-xdist==3.8.0",
                 "pytorchcv==0.0.74",
                 # k8s/ manifests against Kubernetes' schemas (1.25-1.37).
                 "kubernetes-validate==1.37.0"] + PROFILE,
        "profile": PROFILE,
        "demo": ["scikit-learn==1.8.0"],  # data_prep.digits_demo
    },
    entry_points={
        "console_scripts": [
            "pyramidnet-describe=pyramidnet_tf.describe:run",
            "pyramidnet-import-torch=pyramidnet_tf.import_torch:run",
            "pyramidnet-prep-cifar=data_prep.cifar:run",
            "pyramidnet-prep-imagenet=data_prep.imagenet:run",
            "pyramidnet-prep-folder=data_prep.folder:run",
            "pyramidnet-verify-data=data_prep.verify:run",
            "pyramidnet-digits-demo=data_prep.digits_demo:run",
            "pyramidnet-train=pyramidnet_tf.train:run",
            "pyramidnet-evaluate=pyramidnet_tf.evaluate:run",
            "pyramidnet-export=pyramidnet_tf.export:run",
            "pyramidnet-predict=pyramidnet_tf.predict:run",
            "pyramidnet-launch-local=pyramidnet_tf.launch_local:run",
            "pyramidnet-export-torch=pyramidnet_tf.export_torch:run",
        ],
    },
)
