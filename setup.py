"""Installs pyramidnet-tf.

TensorFlow comes through an extra because its CPU and GPU wheels both install
the same `tensorflow` package and must never be installed side by side:

    pip install -e '.[cpu]'        # tensorflow-cpu==2.21.0 (CI, laptops)
    pip install -e '.[gpu]'        # tensorflow[and-cuda]==2.21.0 (GPU hosts)
    pip install -e '.[cpu,test]'   # + pytest and torch==2.13.0 (CPU) for the tests
"""

import setuptools

TF_VERSION = "2.21.0"

setuptools.setup(
    name="pyramidnet-tf",
    version="0.1.0",
    description="PyramidNet (Han, Kim & Kim, CVPR 2017) in TensorFlow 2, without Keras.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["pyramidnet_tf", "pyramidnet_tf.*", "data_prep", "data_prep.*"]),
    install_requires=[
        "absl-py>=2.1,<3",
        "numpy>=1.26,<3",
        "tensorboard==2.21.0",
        "tensorflow-datasets==4.9.10",
        "pillow>=10,<14",
    ],
    extras_require={
        "cpu": [f"tensorflow-cpu=={TF_VERSION}"],
        "gpu": [f"tensorflow[and-cuda]=={TF_VERSION}"],
        "test": ["pytest>=8,<10", "torch==2.13.0"],
    },
    entry_points={
        "console_scripts": [
            "pyramidnet-describe=pyramidnet_tf.describe:run",
            "pyramidnet-import-torch=pyramidnet_tf.import_torch:run",
        ],
    },
)
