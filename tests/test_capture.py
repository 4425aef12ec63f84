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
    "agent_pvt_tiny",
    "agent_swin_tiny",
    "moh_transnext_small_75",  # TransNeXt with Mixture-of-Head routing (top-k + scatter) in every attention
]
# RAVLT and the hybrids beside the families: the released RAVLT layout (RALA / RoPE softmax attention with the stage's
# rotary tables), every named hybrid (issue 19: the default dwconv / global one, those of the mixers no family has,
# pool, static, linear, identity, and the mixes of family mixers) and one hybrid of the last two mixers (sigmoid;
# decoupled, with the stage input its stage hands it).
_VARIANTS = {
    "hybrid_tiny_sigmoid_decoupled": ("hybrid_tiny", dict(mixers="sigmoid | decoupled | sigmoid+decoupled | decoupled"))
}
HYBRID_MODELS = [
    "ravlt_t",
    "hybrid_tiny",
    "hybrid_tiny_pool",
    "hybrid_tiny_static_global",
    "hybrid_tiny_linear_global",
    "hybrid_tiny_global",
    "hybrid_tiny_identity",
    "hybrid_tiny_focal_routed",
    "hybrid_tiny_halo_global",
    *_VARIANTS,
]
# Known gaps (issue 16): none today. A gap is recorded with the error torch 2.15 raises; the slow dynamic-shape cases
# are then marked not run (each failure costs a minute or more).
_EXPORT_DYNAMIC_GAP: dict[str, str] = {}  # torch.export only (see EXPORT_DYNAMIC_XFAIL below)
_ONNX_DYNAMIC_GAP: dict[str, str] = {}  # exports, but the ONNX translation or its numerics fail


# The longest capture cases (3-6 minutes each on a 2-core machine, 30 min of CPU in all): `make test-all` runs them,
# `make test` (CI) leaves them out to stay well inside CI's time. What CI still covers for each: TransNeXt and both
# Agent models compile with the eager backend (same Dynamo graph) and inductor runs for the other families;
# HaloNet-H0's halo attention exports and goes through ONNX as halonet26t's; MoH-TransNeXt exports with dynamic
# H and W (its ONNX graph is TransNeXt's plus the router's top-k).
_EXHAUSTIVE = {
    "inductor": {"transnext_micro", "agent_swin_tiny", "agent_pvt_tiny"},
    "export_dynamic": {"halonet_h0"},
    "onnx_dynamic": {"halonet_h0", "moh_transnext_small_75"},
}


def _not_run_gaps(names, gaps, exhaustive=frozenset()):
    cases = []
    for n in names:
        marks = [pytest.mark.exhaustive] if n in exhaustive else []
        if n in gaps:
            marks.append(pytest.mark.xfail(reason=gaps[n], run=False))
        cases.append(pytest.param(n, marks=marks) if marks else n)
    return cases


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


def _assert_same_math(actual: list, expected: list, what: str) -> None:
    """float64 gradients of a capture equal eager float64 ones to 1e-6 of each tensor's largest entry.

    Training steps are compared in float64: through BatchNorm in training mode the fp32 gradients of a compiled
    graph and of eager mode differ by their rounding alone, up to a few 1e-3 of a tensor's largest entry with
    inductor's reordered reductions (HaloNet), while in float64 the same graphs agree to ~1e-12. float64 keeps the
    check sharp: a lost term or a wrong backward is visible, rounding is not.
    """
    # gradients that are zero in exact arithmetic (a bias before a training-mode BatchNorm) hold ~1e-14 of float64
    # noise: the floor is relative to the largest gradient of the model
    floor = 1e-10 * max(e.abs().max().item() for e in expected if e is not None)
    for i, (a, e) in enumerate(zip(actual, expected)):
        if e is None:
            assert a is None, f"{what}: gradient {i} exists only in the capture"
            continue
        atol = 1e-6 * e.abs().max().item() + floor
        _assert_close(a, e, f"{what}, gradient {i} {tuple(e.shape)}", rtol=1e-6, atol=atol)


def test_lists_cover_every_named_hybrid_and_family():
    """A newly registered hybrid or family must join the capture lists (FX / compile / export / ONNX)."""
    assert set(backbones.list_models("hybrid_*")) <= set(HYBRID_MODELS)
    families = {type(_small(n)).__name__ for n in MODELS if not n.startswith(("hybrid_", "ravlt_"))}
    assert families == {type(_small(n)).__name__ for n in FAMILY_MODELS}


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


_MIXERS = ["pool", "dwconv", "global", "static", "sigmoid", "linear", "decoupled", "rala", "rala_softmax", "focal"]


@pytest.mark.parametrize("mixer", [*_MIXERS, "agent", "swin"])
def test_mixers_keep_their_input_checks_when_captured(mixer):
    """The mixers of the hybrids, RAVLT and the Agent models alone: scripted and FX-traced, a map of the wrong width
    raises the eager ValueError (the same message, up to TorchScript's spelling of the shape)."""
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
    # a training step: BatchNorm in training mode, gradients of every parameter, in float64 (_assert_same_math;
    # fresh instances: the step updates BatchNorm statistics)
    eager, train = _build(name).double().train(), _build(name).double().train()
    train_compiled = torch.compile(train, fullgraph=True, backend=backend, dynamic=False)
    x = torch.randn(2, 3, *sizes[-1], dtype=torch.float64)
    _assert_same_math(
        _grads(train_compiled, train, x), _grads(eager, eager, x), f"{name} compiled ({backend}) training step"
    )


@pytest.mark.parametrize("name", FAMILY_MODELS + HYBRID_MODELS)
def test_compile_fullgraph_matches_eager(name):
    _compile_matches_eager(name, SMALL_SIZES, "eager")


def test_compiled_transnext_graph_has_no_data_dependent_sizes():
    """TransNeXt's per-size position-bias tables enter a compiled graph as constants: no unbacked (data-dependent)
    size, which inductor cannot generate code for (a fast check of the slow inductor case)."""
    from torch.fx.experimental.symbolic_shapes import free_unbacked_symbols

    torch._dynamo.reset()
    unbacked = []

    def backend(gm, example_inputs):
        for node in gm.graph.nodes:
            if free_unbacked_symbols(node.meta.get("example_value")):
                unbacked.append(node.format_node())
        return gm.forward

    model = _small("transnext_micro")
    x = torch.randn(1, 3, *SMALL_SIZES[1])
    with torch.no_grad():
        _assert_close(torch.compile(model, fullgraph=True, backend=backend, dynamic=False)(x), model(x), "compiled")
    assert not unbacked, f"{len(unbacked)} nodes with data-dependent sizes, e.g. {unbacked[0]}"


# MoH-TransNeXt is TransNeXt's compiled graph plus the router (covered by the eager backend here and by export and
# ONNX below): its inductor run (several minutes, like transnext_micro's) is left out of the suite.
_INDUCTOR_MODELS = [n for n in FAMILY_MODELS if not n.startswith("moh_")] + ["ravlt_t", "hybrid_tiny"]


@pytest.mark.slow
@pytest.mark.parametrize("name", _not_run_gaps(_INDUCTOR_MODELS, {}, _EXHAUSTIVE["inductor"]))
def test_compile_fullgraph_inductor_matches_eager(name):
    _compile_matches_eager(name, SIZES, "inductor")


# ---------------------------------------------------------------------------------------------------- torch.export

# Dynamic-H/W export (and so ONNX) that still fails, with the error torch 2.15 raises (not run: each failure costs a
# minute); none today. What used to fail, and why: size-dependent Python branches ("nothing padded", LITv2's Hi-Fi
# padding mask) fixed the 224 example's choice; reshape / flatten / matmul views of permuted or sliced maps read the
# strides, a guard on one-window grids (DaViT, EfficientViT); export's constraint solver refused floor-division
# bounds asserts of a crop (EfficientViT: the crop is a negative pad now); TransNeXt's torch.unique table and
# math.log(N) were data-dependent / specialising; aten's adaptive-pool decomposition (ONNX) picks its form from the
# example size (TransNeXt and AgentAttention pool through bin matrices for symbolic sizes); ONNX has no aten::sort
# (BiFormer: TopK); Swin's "one window: no shift" rule (Agent-Swin: an arithmetic shift, 0 for one window) and the
# routed attention's region reshapes (a guard on one-token regions in the hybrids' last stage) specialised to 224.
# Open (not a test case): `tools/export.py transnext_micro --format onnx --dynamic --check` at full width did not
# finish within 15 minutes on the 2-core CI-like machine (the reduced-width ONNX case here takes about 2); not analysed.
EXPORT_DYNAMIC_XFAIL: dict[str, str] = {}


def _export_dynamic(fn, *args, **kwargs):
    """``fn`` (torch.export.export / torch.onnx.export) with H and W dynamic in [64, 1024].

    ``backed_size_oblivious`` stops the stage maps' "size is 1" checks from specialising the program (the last
    stage is a single window / a 2 x 2 map at small sizes), and unprovable size facts become runtime asserts.
    """
    import torch.fx.experimental._config as fx_config

    dims = {2: torch.export.Dim("height", min=64, max=1024), 3: torch.export.Dim("width", min=64, max=1024)}
    with fx_config.patch(backed_size_oblivious=True):
        return fn(*args, dynamic_shapes={"x": dims}, **kwargs)


# the export / ONNX cases also cover RAVLT (issue 20) and every named hybrid (issue 19)
EXPORT_MODELS = [*FAMILY_MODELS, *(n for n in HYBRID_MODELS if n not in _VARIANTS)]


def _dynamic_cases(extra=None, exhaustive=frozenset()):
    return _not_run_gaps(EXPORT_MODELS, {**EXPORT_DYNAMIC_XFAIL, **(extra or {})}, exhaustive)


@pytest.mark.parametrize("name", EXPORT_MODELS)
def test_export_static_matches_eager(name):
    model = _small(name)
    x = torch.randn(1, 3, *SMALL_SIZES[1])
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        _assert_close(program.module()(x), model(x), f"{name} exported")


def test_export_static_keeps_fake_tensors_out_of_the_eager_caches():
    """A static export at a size eager mode has not seen must not cache the trace's fake tensors (TransNeXt's
    per-size position-bias plan): eager mode at that size afterwards computes real numbers, the program's."""
    model = _small("transnext_micro")
    x = torch.randn(1, 3, 71, 89)  # a size no other test uses
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        out = model(x)
        assert type(out) is torch.Tensor, f"eager output after the export is a {type(out).__name__}"
        _assert_close(program.module()(x), out, "transnext_micro exported, then eager")


@pytest.mark.slow
@pytest.mark.parametrize("name", _dynamic_cases(_EXPORT_DYNAMIC_GAP, _EXHAUSTIVE["export_dynamic"]))
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


def test_onnx_stable_sort_maps_to_topk(tmp_path):
    """BiFormer's routing sort (stable, descending) through ONNX TopK: tied values keep the lower index first."""
    ort = pytest.importorskip("onnxruntime")
    from backbones.onnx_ops import custom_translation_table

    class Sort(torch.nn.Module):
        def forward(self, x):
            return torch.sort(x, dim=-1, descending=True, stable=True)[1]

    x = torch.tensor([[[1.0, 3.0, 3.0, float("-inf"), 3.0, 0.0, float("-inf"), 1.0]]]).repeat(2, 3, 1)
    x[1, 2] = 2.0  # all tied
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            Sort(), (x,), dynamo=True, custom_translation_table=custom_translation_table(), verbose=False
        )
    assert "TopK" in {node.op_type for node in program.model_proto.graph.node}
    program.save(str(tmp_path / "sort.onnx"))
    session = ort.InferenceSession(str(tmp_path / "sort.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    # the stable order written out: by value descending, then by index ascending
    expected = [sorted(range(8), key=lambda i, row=row: (-row[i], i)) for row in x.view(-1, 8).tolist()]
    assert got.reshape(-1, 8).tolist() == expected


@pytest.mark.slow
@pytest.mark.parametrize("name", _dynamic_cases(_ONNX_DYNAMIC_GAP, _EXHAUSTIVE["onnx_dynamic"]))
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
