"""Structured attention-head pruning: score heads, remove the least important physically.

Importance (Michel et al., 2019, "Are Sixteen Heads Really Better than One?"): a gate m_h = 1
multiplies each head's output just before the output projection; the importance of head h is
E_x |dL/dm_h| over calibration batches (L = next-token cross-entropy), normalised per layer by
its L2 norm so layers compare. The least important heads are then *removed*: the rows/columns of
the Q/K/V and output projections are cut, so the model is genuinely smaller.

transformers 5 dropped `PreTrainedModel.prune_heads`, so removal is done here for GPT-2
(`c_attn`/`c_proj`, `Conv1D`) and Llama-style attention (`q_proj`/`k_proj`/`v_proj`/`o_proj`,
`nn.Linear`, grouped-query attention included). Grouped-query attention shares one K/V head
among R query heads; to keep the layout valid, a layer loses either whole groups (with their
K/V head) or the same number of query heads from every group.

Saving: when every layer keeps the same layout and the config can say so (Llama-style configs
have `num_attention_heads`, `num_key_value_heads`, `head_dim`), the config is rewritten and the
folder is a standard model. Otherwise (GPT-2, whose head size is fixed to n_embd / n_head, or
different head counts per layer) the config records the per-layer layout under
`compfair_attention_heads` and `load_head_pruned` rebuilds the model before loading weights."""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from engine.formats.architecture import architecture_name, block_list
from engine.errors import UnsupportedArchitecture

log = logging.getLogger(__name__)

LAYOUT_KEY = "compfair_attention_heads"


# -- finding attention modules --------------------------------------------------------------
@dataclass
class Attention:
    """One block's self-attention and its head layout."""

    layer: int
    module: nn.Module
    kind: str            # "gpt2" | "llama"
    n_heads: int
    n_kv_heads: int
    head_dim: int

    @property
    def group_size(self) -> int:
        """Query heads per K/V head (1 for multi-head attention)."""
        return self.n_heads // self.n_kv_heads

    @property
    def out_proj(self) -> nn.Module:
        return self.module.c_proj if self.kind == "gpt2" else self.module.o_proj


def _find_attention(block: nn.Module) -> tuple[nn.Module, str] | None:
    for module in block.modules():
        if all(hasattr(module, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj")):
            return module, "llama"
        if hasattr(module, "c_attn") and hasattr(module, "c_proj") and hasattr(module, "split_size") \
                and not getattr(module, "is_cross_attention", False):
            return module, "gpt2"
    return None


def attention_layers(model: nn.Module) -> list[Attention]:
    """The self-attention of every block; UnsupportedArchitecture if one is not recognised."""
    _, blocks = block_list(model)
    found = []
    for index, block in enumerate(blocks):
        hit = _find_attention(block)
        if hit is None:
            raise UnsupportedArchitecture(
                f"{architecture_name(model)}: block {index} has no attention head pruning can "
                "handle (supported: GPT-2 c_attn/c_proj, Llama-style q/k/v/o_proj)")
        module, kind = hit
        if kind == "gpt2":
            found.append(Attention(index, module, kind, module.num_heads, module.num_heads,
                                   module.head_dim))
        else:
            head_dim = module.head_dim
            found.append(Attention(index, module, kind, module.o_proj.in_features // head_dim,
                                   module.k_proj.out_features // head_dim, head_dim))
    return found


# -- importance -----------------------------------------------------------------------------
def head_importance(model: nn.Module, calibration: torch.Tensor, device: torch.device,
                    batch_size: int = 8,
                    on_batch: Callable[[int, int], None] | None = None) -> list[torch.Tensor]:
    """Per layer, a `[n_heads]` importance: mean |dL/d gate_h|, L2-normalised per layer."""
    layers = attention_layers(model)
    gates = [torch.ones(a.n_heads, device=device, requires_grad=True) for a in layers]
    scores = [torch.zeros(a.n_heads, device=device) for a in layers]

    def make_hook(attn: Attention, gate: torch.Tensor):
        def hook(module, args):
            x = args[0]                                           # [b, t, n_heads * head_dim]
            b, t, _ = x.shape
            gated = (x.view(b, t, attn.n_heads, attn.head_dim) * gate[None, None, :, None])
            return (gated.view(b, t, -1),) + tuple(args[1:])
        return hook

    handles = [a.out_proj.register_forward_pre_hook(make_hook(a, g)) for a, g in zip(layers, gates)]
    requires = [p.requires_grad for p in model.parameters()]
    for param in model.parameters():
        param.requires_grad_(False)
    was_training = model.training
    model.eval()
    try:
        n = calibration.shape[0]
        for start in range(0, n, batch_size):
            ids = calibration[start:start + batch_size].to(device)
            logits = model(input_ids=ids, use_cache=False).logits.float()
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
            grads = torch.autograd.grad(loss, gates)
            for score, grad in zip(scores, grads):
                score += grad.abs() * ids.shape[0]
            if on_batch:
                on_batch(min(start + batch_size, n), n)
    finally:
        for handle in handles:
            handle.remove()
        for param, flag in zip(model.parameters(), requires):
            param.requires_grad_(flag)
        model.train(was_training)
    return [s / (s.norm() + 1e-12) for s in scores]


# -- planning -------------------------------------------------------------------------------
@dataclass
class LayerCut:
    """What one layer keeps: query heads and K/V heads, by their original index."""

    keep_heads: list[int]
    keep_kv: list[int]
    removed: list[int] = field(default_factory=list)


def removable_counts(n_heads: int, n_kv: int) -> dict[int, list[tuple[int, int]]]:
    """Head counts one layer can lose while keeping a valid layout -> the (groups removed,
    query heads removed per group) pairs that achieve each count. At least one head stays."""
    groups, size = n_kv, n_heads // n_kv
    options: dict[int, list[tuple[int, int]]] = {}
    for g in range(groups):
        for r in range(size):
            k = n_heads - (groups - g) * (size - r)
            options.setdefault(k, []).append((g, r))
    return options


def heads_to_remove(n_heads: int, n_kv: int, sparsity: float) -> int:
    """Heads per layer to remove for `sparsity`: the achievable count nearest to
    sparsity * n_heads (ties: fewer). Raises ValueError if that is none or all of them."""
    wanted = sparsity * n_heads
    counts = sorted(removable_counts(n_heads, n_kv))
    best = min(counts, key=lambda k: (abs(k - wanted), k))
    if wanted >= n_heads - 0.5:
        raise ValueError(f"sparsity {sparsity} would remove all {n_heads} attention heads of each "
                         f"layer; at most {max(counts)} can go ({max(counts) / n_heads:.3f})")
    if best == 0 and sparsity > 0:
        raise ValueError(f"sparsity {sparsity} of {n_heads} heads per layer removes no head; "
                         f"the smallest step is {min(k for k in counts if k) / n_heads:.3f}")
    return best


def _cut_layer(importance: torch.Tensor, attn: Attention, g: int, r: int) -> tuple[LayerCut, float]:
    """Remove r least important query heads from every group, then the g weakest groups."""
    size = attn.group_size
    imp = importance.tolist()
    keep_per_group: dict[int, list[int]] = {}
    lost = 0.0
    for group in range(attn.n_kv_heads):
        members = list(range(group * size, (group + 1) * size))
        ranked = sorted(members, key=lambda h: imp[h])
        lost += sum(imp[h] for h in ranked[:r])
        keep_per_group[group] = sorted(ranked[r:])
    weakest = sorted(keep_per_group, key=lambda grp: sum(imp[h] for h in keep_per_group[grp]))[:g]
    lost += sum(imp[h] for grp in weakest for h in keep_per_group[grp])
    keep_kv = sorted(grp for grp in keep_per_group if grp not in weakest)
    keep_heads = sorted(h for grp in keep_kv for h in keep_per_group[grp])
    removed = sorted(set(range(attn.n_heads)) - set(keep_heads))
    return LayerCut(keep_heads, keep_kv, removed), lost


def plan_layerwise(layers: list[Attention], importance: list[torch.Tensor],
                   sparsity: float) -> dict[int, LayerCut]:
    """The same number of heads out of every layer (and the same layout, so standard configs
    can describe the result): of the (g, r) choices that achieve it, the one losing the least
    total importance."""
    attn0 = layers[0]
    k = heads_to_remove(attn0.n_heads, attn0.n_kv_heads, sparsity)
    best: tuple[float, dict[int, LayerCut]] | None = None
    for g, r in removable_counts(attn0.n_heads, attn0.n_kv_heads)[k]:
        cuts, lost = {}, 0.0
        for attn, imp in zip(layers, importance):
            cuts[attn.layer], layer_lost = _cut_layer(imp, attn, g, r)
            lost += layer_lost
        if best is None or lost < best[0]:
            best = (lost, cuts)
    return best[1] if best else {}


def plan_global(layers: list[Attention], importance: list[torch.Tensor],
                sparsity: float) -> dict[int, LayerCut]:
    """The `sparsity` share of all heads with the lowest (layer-normalised) importance, each
    layer keeping at least one head. Multi-head attention only (one K/V head per query head)."""
    ranked = sorted(((float(imp[h]), attn.layer, h) for attn, imp in zip(layers, importance)
                     for h in range(attn.n_heads)))
    total = sum(a.n_heads for a in layers)
    budget = round(sparsity * total)
    left = {a.layer: a.n_heads for a in layers}
    removed: dict[int, list[int]] = {a.layer: [] for a in layers}
    for _, layer, head in ranked:
        if budget == 0:
            break
        if left[layer] > 1:
            removed[layer].append(head)
            left[layer] -= 1
            budget -= 1
    plan = {}
    for attn in layers:
        keep = [h for h in range(attn.n_heads) if h not in removed[attn.layer]]
        plan[attn.layer] = LayerCut(keep, list(keep), sorted(removed[attn.layer]))
    return plan


def validate_plan_inputs(layers: list[Attention], sparsity: float, scope: str) -> None:
    """ValueError (one line) for a request the model's layout cannot meet."""
    layouts = {(a.n_heads, a.n_kv_heads) for a in layers}
    if scope == "global":
        if any(a.group_size > 1 for a in layers):
            a = layers[0]
            raise ValueError(f"global head pruning needs one K/V head per query head; this model "
                             f"groups {a.n_heads} query heads over {a.n_kv_heads} K/V heads: "
                             "use scope=layer")
        total = sum(a.n_heads for a in layers)
        if round(sparsity * total) > total - len(layers):
            raise ValueError(f"sparsity {sparsity} would remove {round(sparsity * total)} of "
                             f"{total} heads, but each of the {len(layers)} layers keeps one")
        return
    if len(layouts) > 1:
        raise ValueError("layers have different head layouts already; use scope=global")
    heads_to_remove(layers[0].n_heads, layers[0].n_kv_heads, sparsity)


# -- physical removal -----------------------------------------------------------------------
def _head_index(heads: list[int], head_dim: int, offset: int = 0) -> torch.Tensor:
    return torch.tensor([offset + h * head_dim + i for h in heads for i in range(head_dim)],
                        dtype=torch.long)


def _cut_linear(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new nn.Linear keeping `index` along `dim` (0: outputs, 1: inputs) of the weight."""
    index = index.to(linear.weight.device)
    weight = linear.weight.data.index_select(dim, index).clone()
    out_f, in_f = weight.shape
    new = nn.Linear(in_f, out_f, bias=linear.bias is not None, device=weight.device, dtype=weight.dtype)
    new.weight.data.copy_(weight)
    if linear.bias is not None:
        new.bias.data.copy_(linear.bias.data if dim == 1 else linear.bias.data.index_select(0, index))
    new.weight.requires_grad_(linear.weight.requires_grad)
    return new


def _cut_conv1d(conv: nn.Module, index: torch.Tensor, dim: int) -> nn.Module:
    """A new Conv1D keeping `index` along the weight's `dim` of its `[in, out]` weight."""
    index = index.to(conv.weight.device)
    weight = conv.weight.data.index_select(dim, index).clone()
    new = type(conv)(weight.shape[1], weight.shape[0])       # Conv1D(nf=out, nx=in)
    new.to(device=weight.device, dtype=weight.dtype)
    new.weight.data.copy_(weight)
    new.bias.data.copy_(conv.bias.data if dim == 0 else conv.bias.data.index_select(0, index))
    return new


def cut_attention(attn: Attention, cut: LayerCut) -> None:
    """Physically remove the heads `cut` does not keep from one attention module."""
    module, d = attn.module, attn.head_dim
    if attn.kind == "gpt2":
        inner = module.split_size                                  # n_heads * head_dim
        q = _head_index(cut.keep_heads, d)
        qkv = torch.cat([q, q + inner, q + 2 * inner])
        module.c_attn = _cut_conv1d(module.c_attn, qkv, dim=1)    # weight [in, 3 * inner]
        module.c_proj = _cut_conv1d(module.c_proj, q, dim=0)      # weight [inner, out]
        module.num_heads = len(cut.keep_heads)
        module.split_size = len(cut.keep_heads) * d
    else:
        q, kv = _head_index(cut.keep_heads, d), _head_index(cut.keep_kv, d)
        module.q_proj = _cut_linear(module.q_proj, q, dim=0)      # weight [n_heads * d, hidden]
        module.k_proj = _cut_linear(module.k_proj, kv, dim=0)
        module.v_proj = _cut_linear(module.v_proj, kv, dim=0)
        module.o_proj = _cut_linear(module.o_proj, q, dim=1)      # weight [hidden, n_heads * d]
        module.num_key_value_groups = len(cut.keep_heads) // len(cut.keep_kv)
        for name, value in (("num_heads", len(cut.keep_heads)),
                            ("num_key_value_heads", len(cut.keep_kv))):
            if hasattr(module, name):
                setattr(module, name, value)


def apply_plan(model: nn.Module, plan: dict[int, LayerCut]) -> list[list[int]]:
    """Remove heads per `plan`; records the layout in the config; returns [[heads, kv], ...]."""
    layers = attention_layers(model)
    for attn in layers:
        if attn.layer in plan:
            cut_attention(attn, plan[attn.layer])
    layout = [[a.n_heads, a.n_kv_heads] for a in attention_layers(model)]
    record_layout(model, layout, layers[0].head_dim)
    return layout


def record_layout(model: nn.Module, layout: list[list[int]], head_dim: int) -> None:
    """Write the layout into the config: standard fields where they suffice, else LAYOUT_KEY."""
    config = model.config
    uniform = all(entry == layout[0] for entry in layout)
    standard = None
    if uniform and hasattr(config, "head_dim") and hasattr(config, "num_key_value_heads"):
        standard = copy.deepcopy(config)
        standard.num_attention_heads, standard.num_key_value_heads = layout[0]
        standard.head_dim = head_dim
        try:   # e.g. LlamaConfig insists on hidden_size % num_attention_heads == 0
            if hasattr(standard, "validate"):
                standard.validate()
        except Exception:  # noqa: BLE001 - any objection means: record the layout instead
            standard = None
    if standard is not None:
        config.num_attention_heads, config.num_key_value_heads = layout[0]
        config.head_dim = head_dim
        if hasattr(config, LAYOUT_KEY):
            delattr(config, LAYOUT_KEY)
    else:
        setattr(config, LAYOUT_KEY, layout)


# -- loading a model whose config records a layout -----------------------------------------
def has_head_layout(path: str | Path) -> bool:
    """True when the folder's config.json records a per-layer head layout (needs
    `load_head_pruned` instead of a plain `from_pretrained`)."""
    config = Path(path) / "config.json"
    if not config.exists():
        return False
    try:
        return LAYOUT_KEY in json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def shrink_to_layout(model: nn.Module, layout: list[list[int]]) -> None:
    """Cut a freshly built full-size model to `layout` (which heads is irrelevant: the weights
    are about to be loaded)."""
    for attn, (n_heads, n_kv) in zip(attention_layers(model), layout):
        if (n_heads, n_kv) == (attn.n_heads, attn.n_kv_heads):
            continue
        size = attn.group_size
        per_group = n_heads // n_kv
        keep_heads = [g * size + i for g in range(n_kv) for i in range(per_group)]
        cut_attention(attn, LayerCut(keep_heads, list(range(n_kv))))


def load_head_pruned(path: str | Path, dtype: torch.dtype = torch.float32):
    """Load a head-pruned model saved with a LAYOUT_KEY config: build the full model from its
    config, cut each layer to the recorded layout, then load the saved weights strictly
    (only tied weights may be absent from the files)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    folder = Path(path)
    config = AutoConfig.from_pretrained(folder)
    layout = getattr(config, LAYOUT_KEY)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    shrink_to_layout(model, layout)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder} has no .safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(str(file)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "all_tied_weights_keys", {}) or {})
    if unexpected or set(missing) - tied:
        raise ValueError(f"weights in {folder} do not match its recorded head layout "
                         f"(missing {sorted(set(missing) - tied)[:3]}, unexpected {unexpected[:3]})")
    model.tie_weights()
    if (folder / "generation_config.json").exists():
        model.generation_config = GenerationConfig.from_pretrained(folder)
    model.to(dtype)
    model.eval()
    return model
