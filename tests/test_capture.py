"""Graph-capture contract: TorchScript, FX, torch.compile, torch.export and ONNX against eager mode.

Every registered model is scripted and FX-traced (timm's ``features_only=True, feature_cls='fx'``) at its reduced
width (tests/model_specs.py SMALL_KWARGS); one model per family goes through FX forward and backward,
``torch.compile(fullgraph=True)`` (eager backend; inductor in the slow tests), ``torch.export`` with dynamic H and W,
and ONNX (dynamo exporter) checked in onnxruntime. Each capture is compared with the same instance in eager mode.
"""

from __future__ import annotations

import functools
import warnings

import pytest
import timm
import torch
from model_specs import small_kwargs
from timm.layers import get_notrace_functions, get_notrace_modules
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import backbones

MODELS = backbones.list_models()
# one model per family (the two HaloNet variants, paper H-series and timm hybrids, are built differently)
FAMILY_MODELS = [
    "biformer_tiny",
    "davit_tiny",
    "efficientvit_m0",
    "focalnet_tiny_srf",
    "halonet26t",
    "halonet_h0",
    "litv2_small",
    "transnext_micro",
]
# RAVLT and the hybrids beside the families: the released RAVLT layout (RALA / RoPE softmax attention with the stage's
# rotary tables), the default hybrid (dwconv, global), the hybrids of the other mixers no family has (pool, static,
# linear) and one hybrid of the last two (sigmoid; decoupled, with the stage input its stage hands it).
_VARIANTS = {
    "hybrid_tiny_sigmoid_decoupled": ("hybrid_tiny", dict(mixers="sigmoid | decoupled | sigmoid+decoupled | decoupled"))
}
HYBRID_MODELS = [
    "ravlt_t",
    "hybrid_tiny",
    "hybrid_tiny_pool",
    "hybrid_tiny_static_global",
    "hybrid_tiny_linear_global",
    *_VARIANTS,
]
# Known gaps, recorded on issue 16 (strict: a fix shows up as XPASS and must remove its entry).
_COMPILE_GAP = {
    "halonet26t": "compiled training step: fused attention path vs eager's memory-light autograd function differ "
    "by up to 3.5e-5 abs in one gradient (BatchNorm training mode, batch 2); not yet analysed",
    "halonet_h0": "compiled training step: a gradient differs by up to 1.9e-4 abs / 4% rel from eager; "
    "not yet analysed",
}


# Slow capture paths that still fail on CPU with torch 2.15 (not run: each costs minutes; recorded on issue 16).
_INDUCTOR_GAP = {
    "efficientvit_m0": "inductor training step: gradient 0 differs from eager beyond rtol 1e-4 / atol 1e-5",
    "halonet26t": "inductor training step: gradient 0 differs from eager beyond rtol 1e-4 / atol 1e-5",
    "halonet_h0": "inductor training step: gradient 0 differs from eager beyond rtol 1e-4 / atol 1e-5",
    "litv2_small": "inductor training step: gradient 0 differs from eager beyond rtol 1e-4 / atol 1e-5",
    "transnext_micro": "InductorError: For u6*u7, expected [u6, u7] to have been codegen-ed (unbacked sizes)",
}
_EXPORT_DYNAMIC_GAP = {
    "litv2_small": "runtime assertion Eq(2*(stage-4 size), stage-3 size) fails at 197x253 (deformable merging)",
}
_ONNX_DYNAMIC_GAP = {
    "biformer_tiny": "ConversionError: the exported program does not convert to ONNX (step 3/3)",
    "litv2_small": "max abs diff 3.8e-3 of the largest logit at 197x253 in onnxruntime",
}


def _not_run_gaps(names, gaps):
    return [pytest.param(n, marks=pytest.mark.xfail(reason=gaps[n], run=False)) if n in gaps else n for n in names]


def _with_gaps(names, gaps):
    return [pytest.param(n, marks=pytest.mark.xfail(reason=gaps(n), strict=True)) if gaps(n) else n for n in names]


SMALL_SIZES = ((64, 64), (65, 97))  # a multiple of every stride, and an odd size that pads everywhere
SIZES = ((224, 224), (197, 253))

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")


def _build(name: str, **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    name, kwargs = _VARIANTS.get(name, (name, {}))
    return timm.create_model(name, drop_path_rate=0.0, **small_kwargs(name), **kwargs, **extra).eval()


@functools.cache
def _small(name: str) -> torch.nn.Module:
    """A shared eval-mode reduced-width instance (do not modify it in a test)."""
    return _build(name)


def _assert_close(actual, expected, what: str, rtol: float = 1e-5, atol: float = 1e-5) -> None:
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


def _grads(fn, model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Gradients of a scalar of ``fn(x)`` with respect to ``x`` and every parameter of ``model``."""
    x = x.clone().requires_grad_()
    params = [p for p in model.parameters() if p.requires_grad]
    out = fn(x)
    out = out if isinstance(out, torch.Tensor) else torch.cat([o.flatten() for o in out])
    return list(torch.autograd.grad(out.square().sum(), [x, *params], allow_unused=True))


def _assert_grads_close(actual: list, expected: list, what: str) -> None:
    for i, (a, e) in enumerate(zip(actual, expected)):
        if e is None:
            assert a is None, f"{what}: gradient {i} exists only in the capture"
            continue
        _assert_close(a, e, f"{what}, gradient {i}", rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------------- TorchScript


@pytest.mark.parametrize("name", [*MODELS, *_VARIANTS])
def test_script_forward_and_backward_match_eager(name):
    model = _small(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(model)
    x = torch.randn(2, 3, *SMALL_SIZES[1])
    with torch.no_grad():
        _assert_close(scripted(x), model(x), f"{name} scripted forward")
    # the scripted module shares the eager module's parameters: gradients with respect to the same tensors
    _assert_grads_close(_grads(scripted, model, x), _grads(model, model, x), f"{name} scripted backward")


def test_script_keeps_input_checks():
    scripted = torch.jit.script(_small("davit_tiny"))
    with pytest.raises(torch.jit.Error, match="expected input x of shape"):
        scripted(torch.randn(2, 4, 64, 64))


# ---------------------------------------------------------------------------------------------------------- FX


@pytest.mark.parametrize("name", [*MODELS, *_VARIANTS])
def test_fx_features_only_matches_eager_features(name):
    """``timm.create_model(..., features_only=True, feature_cls='fx')``: the stage maps of the eager extractor."""
    fx = _build(name, features_only=True, feature_cls="fx")
    eager = _build(name, features_only=True)
    assert fx.feature_info.channels() == eager.feature_info.channels()
    x = torch.randn(1, 3, *SMALL_SIZES[1])
    with torch.no_grad():
        feats_fx, feats = fx(x), eager(x)
    assert len(feats_fx) == len(feats)
    for i, (a, b) in enumerate(zip(feats_fx, feats)):
        if a.shape != b.shape:  # channels-last stages (LITv2): FX returns the stage module's own NHWC output
            a = a.permute(0, 3, 1, 2)
        _assert_close(a, b, f"{name} fx feature {i}")


def _fx_model(model: torch.nn.Module) -> torch.nn.Module:
    """The whole model as an FX graph module (torchvision's extractor, timm's leaf modules and functions)."""
    kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions())
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=kwargs)
    return create_feature_extractor(
        model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]], tracer_kwargs=kwargs
    )


@pytest.mark.parametrize("name", FAMILY_MODELS + HYBRID_MODELS)
def test_fx_forward_and_backward_match_eager(name):
    model = _small(name)
    graph = _fx_model(model).eval()

    def run(x):
        return next(iter(graph(x).values()))

    x = torch.randn(2, 3, *SMALL_SIZES[1])
    with torch.no_grad():
        _assert_close(run(x), model(x), f"{name} FX forward")
    _assert_grads_close(_grads(run, model, x), _grads(model, model, x), f"{name} FX backward")


def test_fx_graph_keeps_input_checks():
    graph = _fx_model(_small("focalnet_tiny_srf"))
    with pytest.raises(ValueError, match="expected input x with 3 channels"):
        graph(torch.randn(1, 4, 64, 64))


@pytest.mark.parametrize(
    "mixer", ["pool", "dwconv", "global", "static", "sigmoid", "linear", "decoupled", "rala", "rala_softmax", "focal"]
)
def test_mixers_keep_their_input_checks_when_captured(mixer):
    """The hybrids' and RAVLT's mixers alone: scripted and FX-traced, a map of the wrong width raises the eager
    ValueError (the same message, up to TorchScript's spelling of the shape)."""
    from backbones.blocks import create_mixer

    module = create_mixer(mixer, 32, 4).eval()
    bad = torch.randn(1, 5, 6, 16)
    with pytest.raises(ValueError, match=r"expected x of shape \(B, H, W, 32\)") as eager:
        module(bad)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(module)
    with pytest.raises(torch.jit.Error, match=r"expected x of shape \(B, H, W, 32\)"):
        scripted(bad)
    graph = _fx_model(torch.nn.Sequential(module))  # called with x alone: optional inputs (rope=) stay None
    with pytest.raises(ValueError) as traced:
        graph(bad)
    assert str(traced.value) == str(eager.value)
    x = torch.randn(1, 5, 6, 32)
    with torch.no_grad():
        _assert_close(scripted(x), module(x), f"{mixer} scripted")
        _assert_close(next(iter(graph(x).values())), module(x), f"{mixer} FX")


# ---------------------------------------------------------------------------------------------------- torch.compile


def _compile_matches_eager(name: str, sizes, backend: str) -> None:
    torch._dynamo.reset()
    model = _small(name)
    compiled = torch.compile(model, fullgraph=True, backend=backend, dynamic=False)
    for size in sizes:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            _assert_close(compiled(x), model(x), f"{name} compiled ({backend}) at {size}", rtol=1e-4, atol=1e-5)
    # a training step: BatchNorm in training mode, gradients of every parameter (fresh instances: the step
    # updates BatchNorm statistics)
    eager, train = _build(name).train(), _build(name).train()
    train_compiled = torch.compile(train, fullgraph=True, backend=backend, dynamic=False)
    x = torch.randn(2, 3, *sizes[-1])
    _assert_grads_close(_grads(train_compiled, train, x), _grads(eager, eager, x), f"{name} compiled training step")


@pytest.mark.parametrize("name", _with_gaps(FAMILY_MODELS + HYBRID_MODELS, _COMPILE_GAP.get))
def test_compile_fullgraph_matches_eager(name):
    _compile_matches_eager(name, SMALL_SIZES, "eager")


@pytest.mark.slow
@pytest.mark.parametrize("name", _not_run_gaps(FAMILY_MODELS + ["ravlt_t", "hybrid_tiny"], _INDUCTOR_GAP))
def test_compile_fullgraph_inductor_matches_eager(name):
    _compile_matches_eager(name, SIZES, "inductor")


# ---------------------------------------------------------------------------------------------------- torch.export

# Dynamic-H/W export that still fails, with the error torch 2.15 raises (not run: each failure costs a minute).
# The padded window/region sizes become guards on H and W (e.g. "0 <= 7 * ((h4 + 6) // 7) - h4", or "the last
# stage holds exactly one window") that torch.export cannot prove for every size in the range.
EXPORT_DYNAMIC_XFAIL: dict[str, str] = {
    "davit_tiny": "Specializations unexpectedly required (height, width): window count of the last stage == 1 and "
    "'nothing padded' guards at 224",
    "efficientvit_m0": "AssertionError: Cannot create Dim with inconsistent min=1, max=1 (window guards)",
    "transnext_micro": "data-dependent sizes: the position-bias plan uses torch.unique on the offsets",
}


def _export_dynamic(fn, *args, **kwargs):
    """``fn`` (torch.export.export / torch.onnx.export) with H and W dynamic in [64, 1024].

    ``backed_size_oblivious`` stops the stage maps' "size is 1" checks from specialising the program (the last
    stage is a single window / a 2 x 2 map at small sizes), and unprovable size facts become runtime asserts.
    """
    import torch.fx.experimental._config as fx_config

    dims = {2: torch.export.Dim("height", min=64, max=1024), 3: torch.export.Dim("width", min=64, max=1024)}
    with fx_config.patch(backed_size_oblivious=True):
        return fn(*args, dynamic_shapes={"x": dims}, **kwargs)


def _dynamic_cases(extra=None):
    return _not_run_gaps(FAMILY_MODELS, {**EXPORT_DYNAMIC_XFAIL, **(extra or {})})


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_export_static_matches_eager(name):
    model = _small(name)
    x = torch.randn(1, 3, *SMALL_SIZES[1])
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        _assert_close(program.module()(x), model(x), f"{name} exported")


@pytest.mark.slow
@pytest.mark.parametrize("name", _dynamic_cases(_EXPORT_DYNAMIC_GAP))
def test_export_dynamic_hw_serves_both_sizes(name):
    model = _small(name)
    program = _export_dynamic(
        torch.export.export, model, (torch.randn(1, 3, *SIZES[0]),), prefer_deferred_runtime_asserts_over_guards=True
    )
    for size in SIZES:
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            _assert_close(program.module()(x), model(x), f"{name} exported (dynamic H, W) at {size}")


# ---------------------------------------------------------------------------------------------------------- ONNX


def _onnx_matches_eager(model: torch.nn.Module, program, sizes, path, what: str) -> None:
    ort = pytest.importorskip("onnxruntime")
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    for size in sizes:
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            ref = model(x)
        out = torch.from_numpy(session.run(None, {input_name: x.numpy()})[0])
        err = (out - ref).abs().max().item() / ref.abs().max().item()
        assert err <= 1e-4, f"{what} at {size}: max abs diff {err:.2e} of the largest logit"


def test_onnx_deformable_conv_maps_to_deformconv(tmp_path):
    """LITv2's torchvision::deform_conv2d through ONNX DeformConv (opset 19), with offsets that move the taps."""
    pytest.importorskip("onnxruntime")
    from backbones.onnx_ops import custom_translation_table

    model = _build("litv2_small")
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "conv_offset"):  # zero at init: give the offsets something to do
                module.conv_offset.weight.normal_(0.0, 0.3)
                module.conv_offset.bias.normal_(0.0, 0.5)
    x = torch.randn(1, 3, *SMALL_SIZES[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (x,), dynamo=True, custom_translation_table=custom_translation_table(), verbose=False
        )
    assert "DeformConv" in {node.op_type for node in program.model_proto.graph.node}
    _onnx_matches_eager(model, program, [SMALL_SIZES[1]], tmp_path / "litv2.onnx", "litv2_small ONNX")


@pytest.mark.slow
@pytest.mark.parametrize("name", _dynamic_cases(_ONNX_DYNAMIC_GAP))
def test_onnx_dynamic_hw_in_onnxruntime(name, tmp_path):
    pytest.importorskip("onnxruntime")
    from backbones.onnx_ops import custom_translation_table

    model = _small(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = _export_dynamic(
            torch.onnx.export,
            model,
            (torch.randn(1, 3, *SIZES[0]),),
            dynamo=True,
            custom_translation_table=custom_translation_table(),
            verbose=False,
        )
    _onnx_matches_eager(model, program, SIZES, tmp_path / f"{name}.onnx", f"{name} ONNX (dynamic H, W)")
