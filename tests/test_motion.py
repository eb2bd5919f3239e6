"""Latent-space motion (codec/motion.py): flow rescaling, affine maps, warping, validation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from featcodec.codec.errors import InputError
from featcodec.codec.motion import affine_flow, latent_affine, latent_flow, warp

STRIDES = (1, 2, 4, 8, 16)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def constant_flow(dx, dy, B: int, h: int, w: int, dtype=torch.float32) -> torch.Tensor:
    """(B, 2, h, w) flow with per-sample constant displacements dx[b], dy[b]."""
    d = torch.tensor([dx, dy], dtype=dtype).T.reshape(B, 2, 1, 1)
    return d.expand(B, 2, h, w).contiguous()


def shifted(ref: torch.Tensor, dx: int, dy: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference solution of target(i, j) = ref(i + dy, j + dx), zero and False outside."""
    _, _, h, w = ref.shape
    out = torch.zeros_like(ref)
    inside = torch.zeros(1, h, w, dtype=torch.bool)
    i0, i1 = max(0, -dy), min(h, h - dy)
    j0, j1 = max(0, -dx), min(w, w - dx)
    if i0 < i1 and j0 < j1:
        out[..., i0:i1, j0:j1] = ref[..., i0 + dy : i1 + dy, j0 + dx : j1 + dx]
        inside[:, i0:i1, j0:j1] = True
    return out, inside


def rotation(deg: float, tx: float, ty: float, scale: float = 1.0, centre=(0.0, 0.0)):
    """theta (1, 2, 3) of a rotation+scale about ``centre`` followed by a translation."""
    a = math.radians(deg)
    A = scale * torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    c = torch.tensor(centre)
    t = c - A @ c + torch.tensor([tx, ty])
    return torch.cat((A, t[:, None]), dim=1)[None].double()


def smooth_image(B: int, H: int, W: int) -> torch.Tensor:
    """Low-frequency test pattern (wavelengths ≥ 40 px), values in about [-3, 3]."""
    y = torch.arange(H, dtype=torch.float64)[:, None] + 0.5
    x = torch.arange(W, dtype=torch.float64)[None, :] + 0.5
    img = torch.sin(x / 9.0 + 0.3) + torch.cos(y / 7.0 - 0.2) + torch.sin((x + y) / 13.0)
    return img.expand(B, 3, H, W).contiguous()


# --- integer shifts ------------------------------------------------------------------------


@pytest.mark.parametrize("h, w", [(8, 16), (7, 10)])
def test_integer_shift_via_flow_is_exact_inside_mask(h: int, w: int) -> None:
    torch.manual_seed(0)
    shifts = [(2, -1), (-3, 0), (0, 5), (w + 1, 0)]  # last: everything comes from outside
    ref = torch.randn(len(shifts), 4, h, w)
    dx, dy = zip(*shifts, strict=True)
    pred, mask = warp(ref, constant_flow(dx, dy, len(shifts), h, w))
    assert pred.shape == ref.shape and mask.shape == (len(shifts), 1, h, w)
    assert mask.dtype == torch.bool
    for b, (sx, sy) in enumerate(shifts):
        expected, inside = shifted(ref[b : b + 1], sx, sy)
        assert torch.equal(mask[b], inside)
        m = inside.expand_as(ref[b])
        if (h & (h - 1)) == 0 and (w & (w - 1)) == 0:  # power-of-two sizes: bit-exact
            assert torch.equal(pred[b][m], expected[0][m])
        else:  # otherwise up to the float rounding of grid_sample's normalisation
            torch.testing.assert_close(pred[b][m], expected[0][m], rtol=0, atol=1e-5)
    assert not mask[-1].any()


@pytest.mark.parametrize("stride", STRIDES)
def test_integer_latent_shift_via_affine_translation(stride: int) -> None:
    torch.manual_seed(1)
    h, w = 8, 4
    ref = torch.randn(1, 3, h, w)
    kx, ky = -1, 2  # latent pixels
    theta = torch.tensor([[[1.0, 0.0, kx * stride], [0.0, 1.0, ky * stride]]])
    expected, inside = shifted(ref, kx, ky)
    flows = (
        latent_flow(affine_flow(theta, (h * stride, w * stride)), stride),
        affine_flow(latent_affine(theta, stride), (h, w)),
    )
    for flow in flows:
        pred, mask = warp(ref, flow)
        assert torch.equal(mask[0], inside)
        m = inside.expand_as(ref[0])
        assert torch.equal(pred[0][m], expected[0][m])


# --- rescaling by the stride ---------------------------------------------------------------


@pytest.mark.parametrize("stride", STRIDES)
def test_constant_flow_is_divided_by_stride(stride: int) -> None:
    H, W = 50, 37  # not multiples of the stride: the latent size rounds up
    flow = constant_flow([3.0, -16.0], [-5.5, 0.25], 2, H, W)
    for mode in ("bilinear", "bicubic", "nearest", "area"):
        out = latent_flow(flow, stride, mode=mode)
        assert out.shape == (2, 2, math.ceil(H / stride), math.ceil(W / stride))
        expected = constant_flow(
            [3.0 / stride, -16.0 / stride], [-5.5 / stride, 0.25 / stride], 2, *out.shape[-2:]
        )
        torch.testing.assert_close(out, expected)
    assert latent_flow(flow, stride, size=(3, 2)).shape == (2, 2, 3, 2)


@pytest.mark.parametrize("stride", STRIDES)
def test_affine_flow_sampled_at_latent_centres_matches_latent_affine(stride: int) -> None:
    h, w = 6, 5
    H, W = h * stride, w * stride
    theta = torch.cat(
        (rotation(7.0, 12.5, -4.0, 1.04, centre=(W / 2, H / 3)), rotation(-3.0, -30.0, 2.0, 0.97))
    )
    dense = affine_flow(theta, (H, W))
    assert dense.shape == (2, 2, H, W) and dense.dtype == torch.float64
    # the dense flow really is A·p + t - p at pixel centres
    p = torch.tensor([W - 0.5, 0.5], dtype=torch.float64)
    torch.testing.assert_close(dense[1, :, 0, -1], theta[1, :, :2] @ p + theta[1, :, 2] - p)
    expected = affine_flow(latent_affine(theta, stride), (h, w))
    for mode in ("bilinear", "area"):  # exact for affine flows (bicubic is not at the borders)
        torch.testing.assert_close(latent_flow(dense, stride, mode=mode), expected)


def test_latent_affine_keeps_linear_part() -> None:
    theta = rotation(10.0, 32.0, -8.0, 1.05)
    out = latent_affine(theta, 8)
    torch.testing.assert_close(out[..., :2], theta[..., :2])
    torch.testing.assert_close(out[..., 2], theta[..., 2] / 8)


@pytest.mark.parametrize("stride", (2, 4))
def test_warp_then_pool_matches_pool_then_warp(stride: int) -> None:
    """The conventions agree: moving the input then pooling by s ≈ pooling then moving the
    latent by the rescaled flow (pooling is the simplest stride-s 'CNN')."""
    H = W = 96
    img = smooth_image(1, H, W)
    theta = rotation(4.0, 6.3, -3.7, 1.03, centre=(W / 2, H / 2))
    flow = affine_flow(theta, (H, W))
    target = F.avg_pool2d(warp(img, flow)[0], stride)
    lat_flow = latent_flow(flow, stride)
    pred, mask = warp(F.avg_pool2d(img, stride), lat_flow)
    # inputs whose source left the frame are not predictable: erode the mask by one latent px
    valid = -F.max_pool2d(-mask.double(), 3, 1, 1) > 0.5
    valid &= F.avg_pool2d(warp(torch.ones_like(img[:, :1]), flow)[1].double(), stride) > 0.999
    assert valid.float().mean() > 0.5
    v = valid.expand_as(pred)
    err = (pred - target)[v]
    nrmse = err.square().mean().sqrt() / (target[v].max() - target[v].min())  # as in the paper
    assert nrmse < 0.01 and err.abs().max() < 0.1
    # ... whereas ignoring the motion, or forgetting the rescaling (ṽ = v), is far off
    still = F.avg_pool2d(img, stride) - target
    wrong = warp(F.avg_pool2d(img, stride), flow[..., ::stride, ::stride])[0] - target
    assert still[v].abs().mean() > 10 * err.abs().mean()
    assert wrong[v].abs().mean() > 10 * err.abs().mean()


# --- modes, dtypes, devices ----------------------------------------------------------------


def test_bicubic_and_nearest_modes() -> None:
    torch.manual_seed(2)
    ref = torch.randn(2, 3, 8, 8)
    flow = constant_flow([1, -2], [0, 3], 2, 8, 8)
    for mode in ("bicubic", "nearest"):
        pred, mask = warp(ref, flow, mode=mode)
        for b, (sx, sy) in enumerate([(1, 0), (-2, 3)]):
            expected, inside = shifted(ref[b : b + 1], sx, sy)
            assert torch.equal(mask[b], inside)
            m = inside.expand_as(ref[b])
            torch.testing.assert_close(pred[b][m], expected[0][m], rtol=0, atol=1e-6)
    # a sub-pixel shift of a smooth signal: bicubic is closer to the truth than bilinear
    img = smooth_image(1, 64, 64)
    half = constant_flow([8.5], [0.0], 1, 64, 64, torch.float64)
    x = torch.arange(64, dtype=torch.float64) + 0.5 + 8.5
    y = torch.arange(64, dtype=torch.float64)[:, None] + 0.5
    exact = torch.sin(x / 9.0 + 0.3) + torch.cos(y / 7.0 - 0.2) + torch.sin((x + y) / 13.0)
    errs = {}
    for mode in ("bilinear", "bicubic"):
        pred, mask = warp(img, half, mode=mode)
        inner = -F.max_pool2d(-mask.double(), 5, 1, 2) > 0.5  # bicubic taps reach 2 px out
        errs[mode] = (pred - exact).abs()[inner.expand_as(pred)].max()
    assert errs["bicubic"] < errs["bilinear"] < 0.01


@pytest.mark.parametrize("dtype", (torch.float64, torch.float16, torch.bfloat16))
def test_output_dtype_follows_input(dtype: torch.dtype) -> None:
    torch.manual_seed(3)
    ref = torch.randn(2, 4, 9, 11)
    flow = torch.randn(2, 2, 9, 11) * 2
    expected, expected_mask = warp(ref, flow)
    for mode in ("bilinear", "bicubic", "nearest"):
        pred, mask = warp(ref.to(dtype), flow.to(dtype), mode=mode)
        assert pred.dtype == dtype and pred.device == ref.device and mask.dtype == torch.bool
    pred, mask = warp(ref.to(dtype), flow)
    tol = 1e-5 if dtype == torch.float64 else 5e-2
    torch.testing.assert_close(pred.float(), expected, rtol=tol, atol=tol)
    assert torch.equal(mask, expected_mask)
    for mode in ("bilinear", "area"):
        lat = latent_flow(flow.to(dtype), 2, mode=mode)
        assert lat.dtype == dtype
        expected = latent_flow(flow, 2, mode=mode)
        torch.testing.assert_close(lat.float(), expected, rtol=tol, atol=tol)


@pytest.mark.cuda
def test_cpu_and_cuda_agree() -> None:
    torch.manual_seed(4)
    ref = torch.randn(2, 8, 24, 40)
    flow = torch.randn(2, 2, 24, 40) * 3
    theta = rotation(5.0, 9.0, -7.0, 1.02).float()
    for mode in ("bilinear", "bicubic"):
        cpu, cpu_mask = warp(ref, flow, mode=mode)
        gpu, gpu_mask = warp(ref.cuda(), flow.cuda(), mode=mode)
        assert gpu.is_cuda and gpu_mask.is_cuda
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)
        assert torch.equal(gpu_mask.cpu(), cpu_mask)
        half, _ = warp(ref.cuda().half(), flow.cuda(), mode=mode)
        assert half.dtype == torch.float16
        torch.testing.assert_close(half.float().cpu(), cpu, rtol=5e-2, atol=5e-2)
    dense = affine_flow(theta, (96, 160))
    torch.testing.assert_close(
        latent_flow(affine_flow(theta.cuda(), (96, 160)), 4).cpu(),
        latent_flow(dense, 4),
        rtol=1e-4,
        atol=1e-4,
    )


# --- validation ----------------------------------------------------------------------------


def test_bad_inputs_raise_input_error() -> None:
    ref = torch.zeros(2, 3, 8, 8)
    flow = torch.zeros(2, 2, 8, 8)
    with pytest.raises(InputError, match=r"flow must have shape \(B, 2, H, W\)"):
        warp(ref, torch.zeros(2, 3, 8, 8))
    with pytest.raises(InputError, match=r"flow must have shape"):
        latent_flow(torch.zeros(2, 8, 8), 2)
    with pytest.raises(InputError, match="does not match the reference"):
        warp(ref, torch.zeros(2, 2, 8, 7))
    with pytest.raises(InputError, match="does not match the reference"):
        warp(ref, torch.zeros(1, 2, 8, 8))
    with pytest.raises(InputError, match="reference must have shape"):
        warp(torch.zeros(3, 8, 8), flow)
    nan = flow.clone()
    nan[1, 0, 3, 3] = float("nan")
    with pytest.raises(InputError, match="flow contains NaN or infinite"):
        warp(ref, nan)
    with pytest.raises(InputError, match="flow contains NaN or infinite"):
        latent_flow(nan, 2)
    warp(ref, nan, check=False)  # the check can be skipped
    inf_theta = torch.tensor([[[1.0, 0.0, float("inf")], [0.0, 1.0, 0.0]]])
    with pytest.raises(InputError, match="theta contains NaN or infinite"):
        affine_flow(inf_theta, (4, 4))
    with pytest.raises(InputError, match="theta must have shape"):
        latent_affine(torch.zeros(1, 3, 3), 2)
    for bad in (0, -2, 1.5, True):
        with pytest.raises(InputError, match="stride must be an integer >= 1"):
            latent_flow(flow, bad)
    with pytest.raises(InputError, match="stride must be an integer >= 1"):
        latent_affine(inf_theta, 0)
    with pytest.raises(InputError, match="unknown warp mode 'area'"):
        warp(ref, flow, mode="area")
    with pytest.raises(InputError, match="unknown flow sampling mode"):
        latent_flow(flow, 2, mode="lanczos")
    with pytest.raises(InputError, match="size must be two positive integers"):
        latent_flow(flow, 2, size=(0, 4))
    with pytest.raises(InputError, match="area sampling needs the size"):
        latent_flow(flow, 2, size=(3, 3), mode="area")
