"""Width schedule and depth validation against the spec's lists (section 1.3)."""

import re

import pytest

from pyramidnet_tf.model import widths


def _r(start, stop, step=1):
  return list(range(start, stop + 1, step))


# Spec section 1.3, verbatim lists (per stage).
SPEC_WIDTHS = {
    ("cifar10", 110, 48, "add"): [
        [17, 18, 19, 20, 20, 21, 22, 23, 24, 25, 26, 27, 28, 28, 29, 30, 31, 32],
        [33, 34, 35, 36, 36, 37, 38, 39, 40, 41, 42, 43, 44, 44, 45, 46, 47, 48],
        [49, 50, 51, 52, 52, 53, 54, 55, 56, 57, 58, 59, 60, 60, 61, 62, 63, 64]],
    ("cifar10", 110, 84, "add"): [
        [18, 19, 21, 22, 24, 25, 27, 28, 30, 32, 33, 35, 36, 38, 39, 41, 42, 44],
        [46, 47, 49, 50, 52, 53, 55, 56, 58, 60, 61, 63, 64, 66, 67, 69, 70, 72],
        [74, 75, 77, 78, 80, 81, 83, 84, 86, 88, 89, 91, 92, 94, 95, 97, 98,
         100]],
    ("cifar10", 110, 270, "add"): [_r(21, 106, 5), _r(111, 196, 5),
                                   _r(201, 286, 5)],
    ("cifar10", 110, 4.75, "mul"): [
        [16, 17, 17, 18, 18, 19, 20, 20, 21, 21, 22, 23, 23, 24, 25, 25, 26, 27],
        [28, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 43, 44, 45],
        [47, 48, 49, 51, 52, 54, 55, 57, 59, 60, 62, 64, 66, 68, 70, 72, 74,
         76]],
    ("cifar10", 110, 8, "mul"): [
        [17, 17, 18, 19, 19, 20, 21, 22, 23, 24, 24, 25, 26, 27, 29, 30, 31, 32],
        [33, 35, 36, 37, 39, 40, 42, 44, 45, 47, 49, 51, 53, 55, 57, 59, 62, 64],
        [67, 69, 72, 75, 78, 81, 84, 87, 91, 94, 98, 102, 106, 110, 114, 119,
         123, 128]],
    ("cifar10", 110, 27, "mul"): [
        [17, 18, 19, 20, 22, 23, 25, 26, 28, 29, 31, 33, 35, 38, 40, 42, 45, 48],
        [51, 54, 58, 61, 65, 69, 74, 78, 83, 88, 94, 100, 106, 113, 120, 127,
         135, 144],
        [153, 163, 173, 184, 195, 208, 221, 235, 249, 265, 282, 300, 318, 338,
         360, 382, 406, 432]],
    ("cifar10", 200, 240, "add"): [
        [20, 23, 27, 31, 34, 38, 41, 45, 49, 52, 56, 60, 63, 67, 71, 74, 78, 81,
         85, 89, 92, 96],
        [100, 103, 107, 111, 114, 118, 121, 125, 129, 132, 136, 140, 143, 147,
         151, 154, 158, 161, 165, 169, 172, 176],
        [180, 183, 187, 191, 194, 198, 201, 205, 209, 212, 216, 220, 223, 227,
         231, 234, 238, 241, 245, 249, 252, 256]],
    ("cifar10", 236, 220, "add"): [
        [19, 22, 24, 27, 30, 33, 36, 39, 41, 44, 47, 50, 53, 55, 58, 61, 64, 67,
         70, 72, 75, 78, 81, 84, 87, 89],
        [92, 95, 98, 101, 103, 106, 109, 112, 115, 118, 120, 123, 126, 129, 132,
         134, 137, 140, 143, 146, 149, 151, 154, 157, 160, 163],
        [165, 168, 171, 174, 177, 180, 182, 185, 188, 191, 194, 197, 199, 202,
         205, 208, 211, 213, 216, 219, 222, 225, 228, 230, 233, 236]],
    ("cifar10", 272, 200, "add"): [
        [18, 20, 23, 25, 27, 29, 32, 34, 36, 38, 40, 43, 45, 47, 49, 52, 54, 56,
         58, 60, 63, 65, 67, 69, 72, 74, 76, 78, 80, 83],
        [85, 87, 89, 92, 94, 96, 98, 100, 103, 105, 107, 109, 112, 114, 116, 118,
         120, 123, 125, 127, 129, 132, 134, 136, 138, 140, 143, 145, 147, 149],
        [152, 154, 156, 158, 160, 163, 165, 167, 169, 172, 174, 176, 178, 180,
         183, 185, 187, 189, 192, 194, 196, 198, 200, 203, 205, 207, 209, 212,
         214, 216]],
    ("imagenet", 200, 300, "add"): [
        [69, 73, 78],
        [82, 87, 91, 96, 100, 105, 109, 114, 119, 123, 128, 132, 137, 141, 146,
         150, 155, 159, 164, 169, 173, 178, 182, 187],
        [191, 196, 200, 205, 209, 214, 219, 223, 228, 232, 237, 241, 246, 250,
         255, 259, 264, 269, 273, 278, 282, 287, 291, 296, 300, 305, 309, 314,
         319, 323, 328, 332, 337, 341, 346, 350],
        [355, 359, 364]],
    ("imagenet", 200, 450, "add"): [
        [71, 78, 84],
        [91, 98, 105, 112, 119, 125, 132, 139, 146, 153, 159, 166, 173, 180, 187,
         194, 200, 207, 214, 221, 228, 234, 241, 248],
        [255, 262, 269, 275, 282, 289, 296, 303, 309, 316, 323, 330, 337, 344,
         350, 357, 364, 371, 378, 384, 391, 398, 405, 412, 419, 425, 432, 439,
         446, 453, 459, 466, 473, 480, 487, 494],
        [500, 507, 514]],
}


@pytest.mark.parametrize("config", sorted(SPEC_WIDTHS, key=str))
def test_widths_equal_spec_lists(config):
  dataset, depth, alpha, mode = config
  arch = widths.architecture(dataset, depth, alpha, mode=mode)
  assert [list(s) for s in arch.planes] == SPEC_WIDTHS[config]


@pytest.mark.parametrize("alpha", [48, 84, 270])
def test_164_bottleneck_has_the_planes_of_110_basic(alpha):
  bottleneck = widths.architecture("cifar10", 164, alpha)
  basic = widths.architecture("cifar10", 110, alpha)
  assert bottleneck.bottleneck and not basic.bottleneck
  assert bottleneck.planes == basic.planes
  assert bottleneck.num_features == 4 * basic.num_features


def test_imagenet_101_a360_partial_lists():
  arch = widths.architecture("imagenet", 101, 360)
  assert arch.stage_units == (3, 4, 23, 3)
  assert list(arch.planes[0]) == [75, 86, 97]
  assert list(arch.planes[1]) == [108, 119, 129, 140]
  assert arch.planes[2][0] == 151 and arch.planes[2][-1] == 391
  assert list(arch.planes[3]) == [402, 413, 424]


def test_rounding_conventions_differ_on_exact_halves():
  # CIFAR-110 basic, alpha=27: step 0.5 lands on .5 at every other unit.
  py3 = widths.width_schedule(16, 27, 54, "add", "py3")
  half_up = widths.width_schedule(16, 27, 54, "add", "half_up")
  assert py3[0] == 16 and half_up[0] == 17  # 16.5: even vs up
  assert sum(a != b for a, b in zip(py3, half_up)) == 14


def test_accumulation_is_float64_in_unit_order():
  # Accumulating alpha/N differs from computing start + k * alpha/N for some
  # configurations; the authors accumulate, so must we.
  planes = widths.width_schedule(16, 63, 54, "add")
  accumulated, w = [], 16.0
  for _ in range(54):
    w += 63 / 54.0
    accumulated.append(round(w))
  assert planes == accumulated


@pytest.mark.parametrize("depth,bottleneck,message", [
    (111, False, "depth must be 6n+2 for basic units; nearest valid: 110, 116"),
    (165, True, "depth must be 9n+2 for bottleneck units; nearest valid: 164, "
                "173"),
    (111, None, "nearest valid: 110, 116"),
    (56, None, "fits both unit types"),
])
def test_bad_cifar_depths(depth, bottleneck, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    widths.architecture("cifar10", depth, 48, bottleneck)


def test_auto_unit_type_follows_the_paper():
  assert not widths.architecture("cifar10", 110, 48).bottleneck
  for depth in (164, 200, 236, 272):
    assert widths.architecture("cifar100", depth, 48).bottleneck
  assert widths.architecture("cifar10", 29, 48).bottleneck  # only 9n+2
  assert not widths.architecture("cifar10", 32, 48).bottleneck  # only 6n+2


@pytest.mark.parametrize("kwargs,message", [
    (dict(dataset="svhn"), "dataset must be one of cifar10, cifar100, imagenet"),
    (dict(mode="sub"), "mode must be one of add, mul"),
    (dict(rounding="floor"), "rounding must be one of py3, half_up"),
    (dict(alpha=-1), "alpha must be >= 0"),
    (dict(alpha=0.5, mode="mul"), "alpha must be >= 1"),
    (dict(alpha="wide"), "alpha must be a number"),
    (dict(depth=110.0), "depth must be an integer"),
])
def test_bad_arguments_name_themselves(kwargs, message):
  args = dict(dataset="cifar10", depth=110, alpha=48)
  args.update(kwargs)
  with pytest.raises(ValueError, match=message):
    widths.architecture(**args)


def test_imagenet_depths():
  assert widths.architecture("imagenet", 34, 10).stage_units == (3, 4, 6, 3)
  assert not widths.architecture("imagenet", 34, 10).bottleneck
  assert widths.architecture("imagenet", 152, 10).stage_units == (3, 8, 36, 3)
  with pytest.raises(ValueError, match="paper's table builds it from "
                     "bottleneck units"):
    widths.architecture("imagenet", 50, 10, bottleneck=False)
  assert widths.architecture("imagenet", 26, 10, True).stage_units == (2,) * 4
  with pytest.raises(ValueError, match="12n\\+2 for bottleneck units; nearest "
                     "valid: 26, 38"):
    widths.architecture("imagenet", 27, 10, True)
  with pytest.raises(ValueError, match="pass bottleneck=True"):
    widths.architecture("imagenet", 26, 10)
