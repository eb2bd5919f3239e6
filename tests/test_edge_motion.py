"""Motion at the edge: DIS flow, robust affines, camera metadata, side-information coding."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from featcodec.codec.errors import BitstreamError, InputError
from featcodec.codec.latent_motion import latent_motion
from featcodec.codec.motion import affine_flow, latent_flow, warp
from featcodec.codec.motion_estimation import camera_affine, estimate_flow, global_affine
from featcodec.codec.motion_side_info import AffineMotion, FlowMotion, MotionCoder
from featcodec.training.datasets.synthetic import render_clip

SIZE = 96


@pytest.fixture(scope="module")
def clip():
    return render_clip(3, 3, SIZE)


@pytest.fixture(scope="module")
def camera_clip():
    return render_clip(7, 3, SIZE, shape_motion=False)


@pytest.fixture(scope="module")
def coder() -> MotionCoder:
    return MotionCoder()


def texture(size: int, seed: int = 0) -> torch.Tensor:
    """A smooth random RGB texture (1, 3, size, size) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, size, size, generator=g)
    for _ in range(2):
        x = F.avg_pool2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), 5, 1)
    return (x - x.min()) / (x.max() - x.min())


def interior(x: torch.Tensor, margin: int = 8) -> torch.Tensor:
    return x[..., margin:-margin, margin:-margin]


def smooth_flow(theta: torch.Tensor, size: tuple[int, int] = (SIZE, SIZE)) -> torch.Tensor:
    return affine_flow(theta.unsqueeze(0), size)[0]


# ---------------------------------------------------------------------------------------------
# estimate_flow
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shift", [(3, -2), (-1, 4)])
def test_estimate_flow_recovers_integer_translation(shift: tuple[int, int]) -> None:
    dx, dy = shift
    big = texture(112)
    reference = big[..., 16:96, 16:96]
    target = big[..., 16 - dy : 96 - dy, 16 - dx : 96 - dx]  # target(p) = reference(p - d)
    flow = estimate_flow(reference, target)
    assert flow.shape == (1, 2, 80, 80) and flow.dtype == torch.float32
    inner = interior(flow)
    expected = torch.tensor([-dx, -dy], dtype=torch.float32).view(1, 2, 1, 1)
    median = inner.flatten(2).median(dim=-1).values
    assert torch.allclose(median, expected[..., 0, 0], atol=0.05)
    assert ((inner - expected).norm(dim=1) < 0.25).float().mean() > 0.95
    # The sign convention: warping the reference with the flow reproduces the target.
    predicted, mask = warp(reference, flow)
    err_flow = (interior(predicted) - interior(target)).abs().mean()
    err_none = (interior(reference) - interior(target)).abs().mean()
    assert err_flow < 0.1 * err_none
    assert bool(interior(mask).all())


def test_estimate_flow_matches_clip_flow(clip) -> None:
    flow = estimate_flow(clip.images[1], clip.images[2])
    epe = interior((flow[0] - clip.flow[2]).norm(dim=0))
    assert epe.median() < 0.5
    assert epe.mean() < 0.75


def test_estimate_flow_batches_and_presets(clip) -> None:
    both = estimate_flow(clip.images[:2], clip.images[1:])
    assert both.shape == (2, 2, SIZE, SIZE)
    assert torch.equal(both[1:], estimate_flow(clip.images[1], clip.images[2]))
    fast = estimate_flow(clip.images[1], clip.images[2], preset="ultrafast")
    assert fast.shape == (1, 2, SIZE, SIZE) and bool(torch.isfinite(fast).all())


def test_estimate_flow_rejects_bad_input(clip) -> None:
    a, b = clip.images[0], clip.images[1]
    with pytest.raises(InputError, match="differ"):
        estimate_flow(a, b[:, :64])
    with pytest.raises(InputError, match="NaN"):
        estimate_flow(a, torch.full_like(b, float("nan")))
    with pytest.raises(InputError, match=r"\(3, H, W\)"):
        estimate_flow(a[:1], b[:1])
    with pytest.raises(InputError, match=r"\(3, H, W\)"):
        estimate_flow(a[0], b[0])
    with pytest.raises(InputError, match="float"):
        estimate_flow((a * 255).to(torch.uint8), (b * 255).to(torch.uint8))
    with pytest.raises(InputError, match="too small"):
        estimate_flow(a[:, :8, :8], b[:, :8, :8])
    with pytest.raises(InputError, match="preset"):
        estimate_flow(a, b, preset="slow")


# ---------------------------------------------------------------------------------------------
# global_affine and camera_affine
# ---------------------------------------------------------------------------------------------


def assert_affine_close(theta: torch.Tensor, expected: torch.Tensor, linear: float, shift: float):
    assert (theta[..., :2] - expected[..., :2]).abs().max() < linear
    assert (theta[..., 2] - expected[..., 2]).abs().max() < shift


def test_camera_affine_matches_background_flow(clip) -> None:
    for t in (1, 2):
        theta = camera_affine(clip.camera, t)
        assert theta.shape == (2, 3) and theta.dtype == torch.float32
        background = clip.instances[t] == 0
        assert background.float().mean() > 0.3
        diff = (smooth_flow(theta) - clip.flow[t]).abs()
        assert diff[:, background].max() < 1e-3


def test_camera_affine_rejects_bad_input(clip) -> None:
    with pytest.raises(InputError, match="previous frame"):
        camera_affine(clip.camera, 0)
    with pytest.raises(InputError, match="previous frame"):
        camera_affine(clip.camera, 3)
    with pytest.raises(InputError, match=r"\(T, 2, 3\)"):
        camera_affine(clip.camera[:, :1], 1)


def test_global_affine_recovers_camera(camera_clip) -> None:
    expected = camera_affine(camera_clip.camera, 1)
    exact = global_affine(camera_clip.flow[1:2])
    assert exact.shape == (1, 2, 3) and exact.dtype == torch.float32
    assert_affine_close(exact[0], expected, 1e-4, 0.01)
    estimated = global_affine(estimate_flow(camera_clip.images[0], camera_clip.images[1]))
    diff = (affine_flow(estimated, (SIZE, SIZE))[0] - smooth_flow(expected)).norm(dim=0)
    assert diff.mean() < 0.3 and diff.max() < 0.8  # DIS itself is off by ~0.1–0.3 px here


def test_global_affine_ignores_moving_objects() -> None:
    theta = torch.tensor([[1.02, -0.03, -0.5], [0.03, 1.02, 1.5]])
    flow = smooth_flow(theta, (64, 80)).unsqueeze(0).clone()
    flow[:, :, 10:30, 20:45] = torch.tensor([4.0, -3.0]).view(1, 2, 1, 1)  # an object
    fitted = global_affine(flow, step=2)
    assert_affine_close(fitted[0], theta, 1e-4, 1e-2)
    assert torch.allclose(affine_flow(fitted, (64, 80))[:, :, 40:], flow[:, :, 40:], atol=0.02)


def test_global_affine_falls_back_to_translation() -> None:
    flow = torch.tensor([1.5, -2.0]).view(1, 2, 1, 1).expand(1, 2, 3, 3).contiguous()
    flow[0, 0, 2, 2] = 2.5  # the single sample of step 4, at pixel (4 // 2, 4 // 2)
    fitted = global_affine(flow, step=4)
    expected = torch.tensor([[[1.0, 0.0, 2.5], [0.0, 1.0, -2.0]]])
    assert torch.equal(fitted, expected)
    with pytest.raises(InputError, match="NaN"):
        global_affine(torch.full((1, 2, 8, 8), float("nan")))
    with pytest.raises(InputError, match="shape"):
        global_affine(torch.zeros(2, 8, 8))
    with pytest.raises(InputError, match="step"):
        global_affine(flow, step=0)


# ---------------------------------------------------------------------------------------------
# MotionCoder
# ---------------------------------------------------------------------------------------------


def test_affine_roundtrip_and_quantization(coder: MotionCoder, clip) -> None:
    for theta in (camera_affine(clip.camera, 2), torch.eye(2, 3), torch.randn(2, 3) * 0.1):
        motion = AffineMotion(theta)
        payload = coder.encode(motion)
        assert payload[0] == 1 and 7 <= len(payload) <= 20
        decoded = coder.decode(payload, (SIZE, SIZE))
        quantized = coder.quantize(motion)
        assert isinstance(decoded, AffineMotion)
        assert torch.equal(decoded.theta, quantized.theta)
        assert decoded.theta.dtype == torch.float32
        err = (quantized.theta - theta).abs()
        assert err[:, :2].max() <= coder.affine_step / 2 + 1e-6
        assert err[:, 2].max() <= coder.translation_step / 2 + 1e-6
    assert len(coder.encode(AffineMotion(torch.eye(2, 3)))) == 7


@pytest.mark.parametrize("input_size", [(SIZE, SIZE), (90, 70), (17, 33)])
def test_flow_roundtrip_and_quantization(input_size: tuple[int, int], coder: MotionCoder) -> None:
    theta = torch.tensor([[0.98, 0.03, 2.0], [-0.03, 0.98, -1.0]])
    g = torch.Generator().manual_seed(1)
    dense = smooth_flow(theta, input_size) + 0.5 * torch.randn(2, *input_size, generator=g)
    motion = coder.coarse(dense)
    assert motion.flow.shape == (2, *coder.grid(input_size)) and motion.block == coder.block
    payload = coder.encode(motion)
    assert payload[0] == 2
    decoded = coder.decode(payload, input_size)
    quantized = coder.quantize(motion)
    assert isinstance(decoded, FlowMotion) and decoded.block == coder.block
    assert torch.equal(decoded.flow, quantized.flow) and decoded.flow.dtype == torch.float32
    assert (quantized.flow - motion.flow).abs().max() <= coder.step / 2 + 1e-6
    # Deterministic: the same bytes again, and a fresh coder decodes the same motion.
    assert coder.encode(motion) == payload
    assert torch.equal(MotionCoder().decode(payload, input_size).flow, decoded.flow)


def test_coarse_averages_partial_blocks(coder: MotionCoder) -> None:
    dense = torch.arange(2 * 20 * 36, dtype=torch.float32).reshape(1, 2, 20, 36)
    coarse = coder.coarse(dense).flow
    assert coarse.shape == (2, 2, 3)
    assert coarse[0, 0, 0] == dense[0, 0, :16, :16].mean()
    assert coarse[1, 1, 2] == dense[0, 1, 16:, 32:].mean()


def test_flow_byte_counts(coder: MotionCoder, clip) -> None:
    cells = 6 * 6
    zero = coder.encode(coder.coarse(torch.zeros(2, SIZE, SIZE)))
    constant = coder.encode(coder.coarse(torch.full((2, SIZE, SIZE), 1.75)))
    assert len(zero) == len(constant) == 6
    g = torch.Generator().manual_seed(0)
    noisy = coder.encode(coder.coarse(8.0 * torch.randn(2, SIZE, SIZE, generator=g)))
    smooth = coder.encode(coder.coarse(smooth_flow(camera_affine(clip.camera, 2))))
    estimated = coder.encode(coder.coarse(estimate_flow(clip.images[1], clip.images[2])))
    assert len(zero) < len(smooth) < len(noisy)
    assert len(smooth) <= cells  # at most a byte per cell for smooth motion
    assert len(estimated) <= 2 * cells
    for payload in (zero, noisy, smooth, estimated):
        motion = coder.decode(payload, (SIZE, SIZE))
        assert coder.encode(motion) == payload


def flow_modes(payload: bytes) -> tuple[int, int]:
    """The x and y channel mode bytes of a coarse-flow payload."""
    modes, pos = [], 2
    for _ in range(2):
        modes.append(payload[pos])
        pos += 1
        while payload[pos] & 0x80:
            pos += 1
        pos += 1
    return modes[0], modes[1]


def test_both_flow_predictors_roundtrip(coder: MotionCoder) -> None:
    # A ramp favours the gradient predictor, independent noise per cell the centre predictor.
    ramp = torch.linspace(-6, 6, 128).view(1, 128).expand(128, 128)
    g = torch.Generator().manual_seed(2)
    noise = 5 * torch.randn(8, 8, generator=g).repeat_interleave(16, 0).repeat_interleave(16, 1)
    for dense in (torch.stack([ramp, ramp.T]), torch.stack([ramp, noise]), noise.expand(2, -1, -1)):
        motion = coder.coarse(dense)
        payload = coder.encode(motion)
        assert torch.equal(coder.decode(payload, (128, 128)).flow, coder.quantize(motion).flow)
    mode_x, mode_y = flow_modes(coder.encode(coder.coarse(torch.stack([ramp, noise]))))
    assert 64 <= mode_x < 255 and mode_y < 64
    mode_x, mode_y = flow_modes(coder.encode(coder.coarse(torch.stack([ramp, 0 * ramp]))))
    assert 64 <= mode_x < 255 and mode_y == 255


@pytest.fixture(scope="module")
def payloads(coder: MotionCoder, clip) -> dict[str, bytes]:
    g = torch.Generator().manual_seed(3)
    return {
        "affine": coder.encode(AffineMotion(camera_affine(clip.camera, 1))),
        "flow": coder.encode(coder.coarse(estimate_flow(clip.images[1], clip.images[2]))),
        "constant": coder.encode(coder.coarse(torch.full((2, SIZE, SIZE), -0.5))),
        "noisy": coder.encode(coder.coarse(20 * torch.randn(2, SIZE, SIZE, generator=g))),
    }


@pytest.mark.parametrize("name", ["affine", "flow", "constant", "noisy"])
def test_malformed_payloads(name: str, coder: MotionCoder, payloads: dict[str, bytes]) -> None:
    payload = payloads[name]
    coder.decode(payload, (SIZE, SIZE))  # valid
    for n in range(len(payload)):
        with pytest.raises(BitstreamError, match="motion side information"):
            coder.decode(payload[:n], (SIZE, SIZE))
    for extra in (b"\x00", b"\x01\x02\x03\x04"):
        with pytest.raises(BitstreamError, match="motion side information"):
            coder.decode(payload + extra, (SIZE, SIZE))
    for kind in (0, 3, 255):
        with pytest.raises(BitstreamError, match="kind"):
            coder.decode(bytes([kind]) + payload[1:], (SIZE, SIZE))


@pytest.mark.parametrize("name", ["flow", "constant", "noisy"])
def test_flow_payload_needs_its_input_size(
    name: str, coder: MotionCoder, payloads: dict[str, bytes]
) -> None:
    coder.decode(payloads[name], (81, 92))  # the same 6×6 grid
    for size in ((SIZE, 128), (64, SIZE), (SIZE + 1, SIZE)):
        with pytest.raises(BitstreamError, match="grid"):
            coder.decode(payloads[name], size)


def test_corrupted_payloads_never_crash(coder: MotionCoder, payloads: dict[str, bytes]) -> None:
    rng = random.Random(0)
    for name in ("flow", "noisy", "affine"):
        payload = payloads[name]
        for _ in range(150):
            data = bytearray(payload)
            for _ in range(rng.randint(1, 3)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            try:
                motion = coder.decode(bytes(data), (SIZE, SIZE))
            except BitstreamError:
                continue
            # Whatever is accepted is a valid motion that codes and decodes like any other.
            again = coder.decode(coder.encode(motion), (SIZE, SIZE))
            field = "theta" if isinstance(motion, AffineMotion) else "flow"
            assert torch.equal(getattr(again, field), getattr(motion, field))


def test_absurd_values_are_rejected(coder: MotionCoder) -> None:
    # An affine whose linear part is off by 2**20 steps (256), and a huge centre symbol.
    absurd_affine = bytes([1]) + bytes([0x80, 0x80, 0x80, 0x01]) + bytes(5)
    with pytest.raises(BitstreamError, match="out of range"):
        coder.decode(absurd_affine, (SIZE, SIZE))
    with pytest.raises(BitstreamError, match="too long"):
        coder.decode(bytes([1]) + b"\xff" * 11, (SIZE, SIZE))
    absurd_centre = bytes([2, 0x66, 255, 0x80, 0x80, 0x40, 255, 0])
    with pytest.raises(BitstreamError, match="absurd"):
        coder.decode(absurd_centre, (SIZE, SIZE))
    with pytest.raises(BitstreamError, match="mode"):
        coder.decode(bytes([2, 0x66, 100, 0, 255, 0]), (SIZE, SIZE))


def test_coder_rejects_bad_motion(coder: MotionCoder) -> None:
    nan = torch.full((2, SIZE, SIZE), float("nan"))
    with pytest.raises(InputError, match="NaN"):
        coder.coarse(nan)
    with pytest.raises(InputError, match="NaN"):
        coder.encode(FlowMotion(torch.full((2, 6, 6), float("nan")), 16))
    with pytest.raises(InputError, match="NaN"):
        coder.quantize(AffineMotion(torch.full((2, 3), float("nan"))))
    with pytest.raises(InputError, match=r"\(2, H, W\)"):
        coder.coarse(torch.zeros(3, SIZE, SIZE))
    with pytest.raises(InputError, match=r"\(2, H, W\)"):
        coder.coarse(torch.zeros(2, 2, SIZE, SIZE))
    with pytest.raises(InputError, match="hb, wb"):
        coder.encode(FlowMotion(torch.zeros(6, 6), 16))
    with pytest.raises(InputError, match="block-8"):
        coder.encode(FlowMotion(torch.zeros(2, 6, 6), 8))
    with pytest.raises(InputError, match=r"\(2, 3\)"):
        coder.encode(AffineMotion(torch.eye(3)))
    with pytest.raises(InputError, match="limit"):
        coder.encode(FlowMotion(torch.full((2, 6, 6), 500.0), 16))
    with pytest.raises(InputError, match="out of range"):
        coder.encode(AffineMotion(torch.eye(2, 3) * 10))
    with pytest.raises(InputError, match="cannot code"):
        coder.encode(torch.eye(2, 3))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# latent_motion
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stride", [1, 2, 4, 8])
def test_latent_motion_affine(stride: int, clip) -> None:
    input_size = (64, SIZE)
    size = (64 // stride, SIZE // stride)
    theta = camera_affine(clip.camera, 2)
    got = latent_motion(AffineMotion(theta), stride, size, input_size)
    expected = latent_flow(affine_flow(theta.unsqueeze(0), input_size), stride)
    assert got.shape == (1, 2, *size) and got.dtype == torch.float32
    assert torch.allclose(got, expected, atol=1e-4)


def test_latent_motion_coarse_flow(coder: MotionCoder) -> None:
    input_size = (90, 70)
    motion = FlowMotion(torch.tensor([3.0, -1.5]).view(2, 1, 1).expand(2, 6, 5).clone(), 16)
    for stride in (1, 4, 8, 16):
        size = (-(-90 // stride), -(-70 // stride))
        got = latent_motion(motion, stride, size, input_size)
        assert got.shape == (1, 2, *size)
        expected = torch.tensor([3.0, -1.5]).view(1, 2, 1, 1) / stride
        assert torch.allclose(got, expected.expand_as(got))
    # With stride == block the latent centres are the cell centres: the coarse flow itself.
    theta = torch.tensor([[1.03, 0.02, -1.0], [-0.02, 0.99, 2.0]])
    coarse = coder.quantize(coder.coarse(smooth_flow(theta, (SIZE, SIZE))))
    got = latent_motion(coarse, 16, (6, 6), (SIZE, SIZE))
    assert torch.allclose(got[0], coarse.flow / 16, atol=1e-6)
    # Affine flows are linear, so the coarse flow's bilinear samples follow the affine inside.
    fine = latent_motion(coarse, 4, (24, 24), (SIZE, SIZE))
    exact = latent_motion(AffineMotion(theta), 4, (24, 24), (SIZE, SIZE))
    assert (fine - exact)[..., 2:-2, 2:-2].abs().max() < 0.1


def test_latent_motion_rejects_mismatched_grid() -> None:
    motion = FlowMotion(torch.zeros(2, 6, 6), 16)
    with pytest.raises(InputError, match="grid"):
        latent_motion(motion, 4, (32, 32), (128, 128))
    with pytest.raises(InputError, match="stride"):
        latent_motion(motion, 0, (32, 32), (SIZE, SIZE))
