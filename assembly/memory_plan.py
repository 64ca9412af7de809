"""What fits on which card: real-size TRRG models built from configs (random weights, nothing
downloaded) and a memory estimate per stage (weights + gradients + optimizer states + activations).

Measurement shapes (``SIZES``): a ViT-B/16-class image encoder (224 px, 197 tokens per view), a
BERT-base-class text encoder and a Llama-shaped LM of 1B-8B parameters, built through the project's
own builders (``pretrain_config`` / ``finetune_config`` with a ``Preset`` whose backbones are
dicts); ``tiny`` is the same shape family small enough for CPU tests.

The estimate (``estimate_memory``) assumes the mixed-precision policy ``benchmarks/gpu.py`` runs:

* **weights**: frozen parameters stored in bf16 (2 bytes), trainable parameters as fp32 masters
  (4 bytes; peft keeps LoRA adapters in fp32 over a bf16 base), compute under bf16 autocast, which
  keeps a bf16 copy of every trainable fp32 weight for the step (2 bytes);
* **gradients**: one fp32 gradient per trainable parameter (4 bytes);
* **optimizer**: AdamW's ``exp_avg`` and ``exp_avg_sq`` in fp32 (8 bytes per trainable parameter)
  plus its 4-byte ``step`` tensor per trainable tensor;
* **activations**: the tensors autograd saves for the backward pass (bf16), from per-layer formulas
  of each block (``_activation_bytes``) plus the LM's logits and loss workspace (bf16 logits, their
  fp32 upcast for the cross-entropy and its fp32 gradient). With gradient checkpointing the
  transformer layers keep only their input, and one layer's activations are rebuilt at a time.
  Not counted: the CUDA context and cuBLAS workspaces (~0.5-1 GB), allocator fragmentation, the
  data batch itself, and (one process, no sharding) anything DDP/FSDP/ZeRO would add or remove.

Stage policies are the project's defaults: ``pretrain`` trains the image and text encoders fully;
``finetune`` freezes the stage-1 perception (its features cached, so the vision encoder runs no
training forward), puts LoRA on the LM's ``q_proj,k_proj,v_proj,o_proj`` (``TRRGFinetuneArguments``
defaults) and trains the clue modules, projectors and consistency heads fully.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager

import torch

from trrg.assembly.build import finetune_config, pretrain_config
from trrg.assembly.presets import Preset
from trrg.assembly.report_tokenizer import CLUE_TOKEN, IMAGE_TOKEN

GIB = 2**30

# Llama-shaped LMs by published shapes (LlamaConfig fields); "vocab": the real model's vocabulary,
# set on the built LM (the report tokenizer's ids are a subset of it).
LM_SHAPES: dict[str, dict] = {
    "tiny": {"hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "vocab": None, "tie_word_embeddings": False},
    # Llama-3.2-1B
    "1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
           "num_key_value_heads": 8, "vocab": 128256, "tie_word_embeddings": True},
    # Llama-3.2-3B
    "3b": {"hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28, "num_attention_heads": 24,
           "num_key_value_heads": 8, "vocab": 128256, "tie_word_embeddings": True},
    # Llama-2-7B (the base preset's LM)
    "7b": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 32, "vocab": 32000, "tie_word_embeddings": False},
    # Llama-3.1-8B
    "8b": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 8, "vocab": 128256, "tie_word_embeddings": False},
}

# ViT-B/16 at 224 px and BERT-base (vocabulary 30522, as bert-base-uncased; Bio_ClinicalBERT has 28996).
VIT_BASE = {"model_type": "vit", "image_size": 224, "patch_size": 16, "hidden_size": 768, "num_hidden_layers": 12,
            "num_attention_heads": 12, "intermediate_size": 3072}
BERT_BASE = {"model_type": "bert", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
             "intermediate_size": 3072, "max_position_embeddings": 512}
BERT_BASE_VOCAB = 30522
VIT_TINY = {"model_type": "vit", "image_size": 64, "patch_size": 16, "hidden_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "intermediate_size": 128, "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0}
BERT_TINY = {"model_type": "bert", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "intermediate_size": 128, "max_position_embeddings": 64, "hidden_dropout_prob": 0.0,
             "attention_probs_dropout_prob": 0.0}

SIZES = tuple(LM_SHAPES)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def measurement_preset(size: str) -> Preset:
    """A ``Preset`` whose backbones are config dicts: ViT-B/16 + BERT-base + a Llama of ``size``
    (``tiny``: the same families at CPU-test size)."""
    if size not in LM_SHAPES:
        raise ValueError(f"size {size!r}: one of {', '.join(SIZES)}")
    shape = {k: v for k, v in LM_SHAPES[size].items() if k != "vocab"}
    llm = {"model_type": "llama", "max_position_embeddings": 4096, **shape}
    if size == "tiny":
        return Preset(vision=VIT_TINY, text=BERT_TINY, llm={**llm, "max_position_embeddings": 512},
                      image_size=64, image_token_grid=4, projection_dim=64,
                      clue={"hidden_size": 64, "num_layers": 1, "num_heads": 4})
    return Preset(vision=VIT_BASE, text=BERT_BASE, llm=llm, image_size=224, image_token_grid=7, projection_dim=512,
                  clue={"hidden_size": 1024, "num_layers": 2, "num_heads": 8})


@contextmanager
def _default_dtype(dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def measurement_config(stage: str, size: str, tokenizer, attn_implementation: str = "sdpa"):
    """The config of a stage at a measurement size: the project's ``pretrain_config`` /
    ``finetune_config`` with the real models' vocabularies (BERT-base's, the LM's)."""
    preset = measurement_preset(size)
    if stage == "pretrain":
        config = pretrain_config(preset, tokenizer)
        if size != "tiny":
            config.text_config.vocab_size = BERT_BASE_VOCAB
    elif stage == "finetune":
        config = finetune_config(preset, tokenizer)
        vocab = LM_SHAPES[size]["vocab"]
        if vocab:
            config.text_config.vocab_size = vocab
    else:
        raise ValueError(f"stage {stage!r}: 'pretrain' or 'finetune'")
    config._attn_implementation = attn_implementation  # set on the sub-configs too
    return config


def build_measurement_model(stage: str, size: str, tokenizer, *, dtype: torch.dtype = torch.float32,
                            device: str | torch.device = "cpu", attn_implementation: str = "sdpa", seed: int = 0):
    """A randomly initialised model of ``stage`` at ``size``, for measurement only (never trained
    into anything). ``device="meta"`` builds the structure without memory (parameter counts of
    8B-class models in a second). No freezing or LoRA here: the trainer's ``prepare_for_training``
    applies the project's policy."""
    from trrg.modeling.modeling_trrg import TRRGContrastiveModel, TRRGForConditionalGeneration

    config = measurement_config(stage, size, tokenizer, attn_implementation)
    model_class = TRRGContrastiveModel if stage == "pretrain" else TRRGForConditionalGeneration
    torch.manual_seed(seed)
    with _default_dtype(dtype), torch.device(device):
        model = model_class(config)
    if stage == "finetune" and str(device) != "meta":
        with torch.no_grad():  # a non-zero prompt bank, so that clues differ between diseases
            generator = torch.Generator().manual_seed(seed)
            bank = torch.randn(model.prompt_bank.shape, generator=generator)
            model.prompt_bank.copy_(torch.nn.functional.normalize(bank, dim=-1))
    return model


def apply_precision_policy(model, dtype: torch.dtype = torch.bfloat16):
    """The policy the estimate assumes: every parameter and buffer in ``dtype`` except trainable
    parameters, which stay fp32 masters (run the step under ``torch.autocast(..., dtype)``). Call it
    after freezing and LoRA (``prepare_for_training``), which decide what is trainable."""
    model.to(dtype)
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()
    return model


# ---------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------

# Trainable modules that take no part in the training loss (no gradient, no optimizer state): the
# backbones' poolers (TRRG pools the last hidden state itself) and the projection of extra clues
# (only used when ``clue_embeds`` are passed; the collators never pass them).
UNUSED_IN_TRAINING = ("pooler.", "extra_clue_proj.")
# Frozen in the finetune stage by ``freeze_perception`` (the stage-1 perception).
FROZEN_PERCEPTION = ("perception.",)


@dataclasses.dataclass(frozen=True)
class ParameterCounts:
    total: int  # parameters, LoRA adapters included
    trainable: int  # requires_grad under the stage's policy
    trained: int  # trainable and reached by the loss (these get gradients and optimizer states)
    trained_tensors: int
    buffer_bytes: int  # buffers under the precision policy (floating ones in bf16)


def lora_parameters(language_model, rank: int, targets=LORA_TARGETS) -> tuple[int, int]:
    """(parameters, tensors) LoRA adds to ``language_model``: rank * (in + out) per targeted
    ``nn.Linear`` (peft's ``lora_A``/``lora_B``, no bias)."""
    count = tensors = 0
    for name, module in language_model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets:
            count += rank * (module.in_features + module.out_features)
            tensors += 2
    return count, tensors


def parameter_counts(model, stage: str, lora_r: int = 16, targets=LORA_TARGETS) -> ParameterCounts:
    """Parameter counts of a built (or meta-device) model under the stage's policy: pretrain trains
    everything; finetune freezes the perception and the LM (LoRA of ``lora_r`` on it)."""
    if stage == "finetune" and lora_r < 1:
        raise ValueError("the finetune estimate covers LoRA on the LM: pass lora_r >= 1")
    total = trainable = trained = tensors = 0
    for name, parameter in model.named_parameters():
        total += parameter.numel()
        frozen = stage == "finetune" and (name.startswith(FROZEN_PERCEPTION) or name.startswith("language_model."))
        if frozen:
            continue
        trainable += parameter.numel()
        if not any(part in name for part in UNUSED_IN_TRAINING):
            trained += parameter.numel()
            tensors += 1
    if stage == "finetune":
        extra, extra_tensors = lora_parameters(model.language_model, lora_r, targets)
        total, trainable, trained, tensors = total + extra, trainable + extra, trained + extra, tensors + extra_tensors
    buffers = sum(b.numel() * (2 if b.is_floating_point() else b.element_size()) for b in model.buffers())
    return ParameterCounts(total, trainable, trained, tensors, buffers)


def matmul_parameters(model, stage: str, lora_r: int = 16, targets=LORA_TARGETS) -> int:
    """Trained parameters that are weights of a matmul (Linear / Conv / attention projections), of
    which bf16 autocast keeps a bf16 copy for the backward pass."""
    count = 0
    for name, module in model.named_modules():
        if any(part in name + "." for part in UNUSED_IN_TRAINING):
            continue
        weights = []
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            weights = [(name + ".weight", module.weight)]
        elif isinstance(module, torch.nn.MultiheadAttention):
            weights = [(name + ".in_proj_weight", module.in_proj_weight)]
        for full, weight in weights:
            frozen = stage == "finetune" and (full.startswith(FROZEN_PERCEPTION) or full.startswith("language_model."))
            if not frozen:
                count += weight.numel()
    if stage == "finetune":
        count += lora_parameters(model.language_model, lora_r, targets)[0]
    return count


# ---------------------------------------------------------------------------------------------
# Activations: bytes autograd saves for the backward pass, per block
# ---------------------------------------------------------------------------------------------

# Tokens of one disease prompt in the text encoder (stage 1 encodes 2 prompts per observation per
# step: "there is X ." / "there is no X ."); BERT word pieces of the longest default prompt.
PROMPT_TOKENS = 16


def _mask_bytes(device: str, input_bytes: int) -> int:
    """What dropout saves per element: CUDA's fused kernel a bool mask, the CPU a mask in the
    input's dtype."""
    return 1 if device == "cuda" else input_bytes


def encoder_layer_bytes(hidden: int, intermediate: int, heads: int, dropout_mask: int = 0) -> int:
    """Per token, one pre/post-LN transformer encoder layer (ViT, BERT) under bf16 autocast with
    SDPA: two LayerNorms keep their fp32 input and statistics (2 x (4h + 8)); q, k and v each keep
    their own bf16 cast of the fp32 LayerNorm output (3 x 2h); SDPA keeps q, k, v, output (8h) and
    an fp32 log-sum-exp per head (4 heads); fc1 its bf16 input (2h), GELU its input and fc2 the
    GELU output (2 x 2I); with hidden dropout, two masks (2 x mask bytes x h)."""
    return 24 * hidden + 4 * intermediate + 4 * heads + 16 + 2 * dropout_mask * hidden


def llama_layer_bytes(hidden: int, intermediate: int, heads: int, lora_inputs: list[int], rank: int,
                      lora_mask: int) -> int:
    """Per token, one Llama decoder layer with a frozen bf16 base and fp32 LoRA adapters: two
    RMSNorms keep an fp32 copy of their input and 1/rms (2 x (4h + 4)); each LoRA-wrapped linear
    keeps the bf16 cast of its (fp32-cast, dropped-out) input, the dropout mask and the bf16 rank-r
    activation ((2 + mask) x in + 2r); SDPA keeps q, k, v (repeated to every head when a padding
    mask is passed) and the output (8h) plus an fp32 log-sum-exp per head; the frozen SwiGLU MLP
    keeps gate, up and SiLU(gate) (3 x 2I). Frozen linears keep nothing: their weight suffices."""
    lora = sum((2 + lora_mask) * width + 2 * rank for width in lora_inputs)
    return 2 * (4 * hidden + 4) + lora + 8 * hidden + 4 * heads + 6 * intermediate


def cross_attention_bytes(queries: int, keys: int, width: int, heads: int) -> int:
    """``TRRGCrossAttention`` (pre-norm, ``nn.MultiheadAttention``, gated) with this many query and
    key rows: per query LayerNorm input + stats, q-projection input, q, output, fp32 log-sum-exp and
    the gated update (10c + 8 + 4 heads); per key LayerNorm input + stats, k/v-projection input, k and v (8c + 8)."""
    return queries * (10 * width + 8 + 4 * heads) + keys * (8 * width + 8)


def feed_forward_bytes(rows: int, width: int) -> int:
    """``TRRGFeedForward``: LayerNorm, 4x MLP with GELU, gated update: 22c + 8 per row."""
    return rows * (22 * width + 8)


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of one training step's peak, by part (``estimate_memory``)."""

    stage: str
    size: str
    lora_r: int
    batch: int
    seq_len: int
    gradient_checkpointing: bool
    params: ParameterCounts
    weights: int
    autocast_copies: int
    gradients: int
    optimizer: int
    activations: int
    workspace: int

    @property
    def static(self) -> int:
        return self.weights + self.gradients + self.optimizer

    @property
    def total(self) -> int:
        return self.static + self.autocast_copies + self.activations + self.workspace

    def gib(self, part: str = "total") -> float:
        return getattr(self, part) / GIB


def _activations(stage, config, batch, seq_len, views, lora_r, lora_dropout, device, targets, checkpointing,
                 prompt_len):
    """(saved activations, transient workspace) in bytes; see the formulas of each block."""
    if stage == "pretrain":
        return _pretrain_activations(config, batch, seq_len, views, device, checkpointing, prompt_len), 0
    return _finetune_activations(config, batch, seq_len, views, lora_r, lora_dropout, device, targets, checkpointing)


def _layers(per_layer: int, layers: int, input_bytes: int, checkpointing: bool) -> int:
    """``layers`` identical layers; with checkpointing each keeps only its input and one layer's
    activations are rebuilt at a time during the backward pass."""
    return layers * input_bytes + per_layer if checkpointing else layers * per_layer


def _pretrain_activations(config, batch, seq_len, views, device, checkpointing, prompt_len) -> int:
    vision, text = config.vision_config, config.text_config
    images, side = batch * views, config.image_size // vision.patch_size
    patches = side * side
    image_tokens = images * (patches + 1)  # + CLS
    w, p = vision.hidden_size, config.projection_dim
    vit_layer = image_tokens * encoder_layer_bytes(w, vision.intermediate_size, vision.num_attention_heads,
                                                   _dropout(vision.hidden_dropout_prob, device, 2))
    out = images * 2 * 3 * config.image_size ** 2  # the bf16 pixels the patch convolution keeps
    out += _layers(vit_layer, vision.num_hidden_layers, image_tokens * 4 * w, checkpointing)
    out += image_tokens * (4 * w + 8) + images * 4 * w  # final LayerNorm; pooler (runs, unused)
    # Patch grid (fp32 copy for the max pool), patch projection input and embeddings, study
    # embedding; local logits keep patch x text similarities (bf16, input and output of logsumexp).
    texts, diseases = batch, config.num_diseases
    out += images * patches * (4 * w + 2 * w + 4 * p) + images * 8 * w
    out += images * patches * 2 * 2 * (texts + 3 * diseases)

    sequences = [(batch, seq_len), (2 * diseases, prompt_len)]
    h, heads = text.hidden_size, text.num_attention_heads
    mask = _dropout(text.hidden_dropout_prob, device, 2)
    for count, length in sequences:
        tokens = count * length
        layer = tokens * encoder_layer_bytes(h, text.intermediate_size, heads, mask)
        out += tokens * (4 * h + 8 + 16 + _dropout(text.hidden_dropout_prob, device, 4) * h)  # embeddings
        out += _layers(layer, text.num_hidden_layers, tokens * 4 * h, checkpointing)
        out += count * 2 * length * length  # the bf16 padding mask, shared by the layers
        out += tokens * 4 + count * (4 * h + 2 * h + 4 * p)  # masked mean, pooler, projection
    return out


def _dropout(probability: float, device: str, input_bytes: int) -> int:
    return _mask_bytes(device, input_bytes) if probability else 0


def _finetune_activations(config, batch, seq_len, views, lora_r, lora_dropout, device, targets, checkpointing):
    llm, clue = config.text_config, config.clue_config
    w = config.vision_config.hidden_size if not getattr(config.vision_config, "hidden_sizes", None) \
        else config.vision_config.hidden_sizes[-1]
    c, heads, diseases = clue.hidden_size, clue.num_heads, config.num_diseases
    patches = batch * views * config.image_token_grid ** 2
    globals_ = batch * (1 + views)
    clues = batch * (diseases + 1)  # + the null key, which runs through every interaction layer
    out = patches * (2 * w + 2 * c) + globals_ * (4 * w + 2 * c)  # visual and global adapters
    out += batch * diseases * 2 * (config.projection_dim + 1)  # perception projection of the clues
    if config.clue_config.use_clue_interaction:
        layer = (cross_attention_bytes(clues, globals_, c, heads) + cross_attention_bytes(clues, patches, c, heads)
                 + cross_attention_bytes(patches, clues, c, heads) - 2 * c * patches  # patches normed once as keys and queries
                 + feed_forward_bytes(clues, c) + feed_forward_bytes(patches, c))
        out += clue.num_layers * layer
    h = llm.hidden_size
    out += batch * diseases * (2 * c + 2 * h) + patches * 2 * c  # clue projector + gate, visual projector

    tokens = batch * seq_len
    widths = {"q_proj": h, "k_proj": h, "v_proj": h, "o_proj": h, "gate_proj": h, "up_proj": h,
              "down_proj": llm.intermediate_size}
    lora_inputs = [widths[t] for t in targets]
    layer = tokens * llama_layer_bytes(h, llm.intermediate_size, llm.num_attention_heads, lora_inputs, lora_r,
                                       _dropout(lora_dropout, device, 4))
    out += _layers(layer, llm.num_hidden_layers, tokens * 2 * h, checkpointing)
    head_dim = h // llm.num_attention_heads
    out += batch * 2 * seq_len * seq_len + 2 * 2 * seq_len * head_dim  # padding mask, RoPE cos/sin (shared)
    out += tokens * (4 * h + 4) + tokens * 2  # final RMSNorm; placeholder masks
    out += batch * diseases * 2 * h  # consistency heads read the clue slots
    vocab = llm.vocab_size
    out += tokens * 4 * vocab  # fp32 log-probabilities the cross-entropy keeps
    workspace = tokens * 6 * vocab  # bf16 logits + their fp32 copy, alive at the loss
    return out, workspace


def estimate_memory(stage: str, size: str = "7b", lora_r: int = 16, batch: int = 8, seq_len: int = 256,
                    gradient_checkpointing: bool = False, views: int = 2, lora_dropout: float = 0.05,
                    targets=LORA_TARGETS, device: str = "cuda", prompt_len: int = PROMPT_TOKENS, tokenizer=None,
                    model=None) -> MemoryEstimate:
    """Peak memory of one training step of ``stage`` (one process, no sharding) at ``size``.

    ``seq_len``: finetune, LM tokens per study (prompt with its image and clue tokens + report);
    pretrain, tokens of the study's sentence. ``device``: "cuda" (dropout keeps bool masks) or
    "cpu" (masks in the input dtype; what the tests measure). The parameters are counted on a
    meta-device build (``model`` may pass one); see the module docstring for the policy.
    """
    if model is None:
        model = build_measurement_model(stage, size, tokenizer or counting_tokenizer(), device="meta")
    counts = parameter_counts(model, stage, lora_r, targets)
    frozen = counts.total - counts.trainable
    weights = 2 * frozen + 4 * counts.trainable + counts.buffer_bytes
    activations, workspace = _activations(stage, model.config, batch, seq_len, views, lora_r, lora_dropout,
                                          device, targets, gradient_checkpointing, prompt_len)
    return MemoryEstimate(stage=stage, size=size, lora_r=lora_r if stage == "finetune" else 0, batch=batch,
                          seq_len=seq_len, gradient_checkpointing=gradient_checkpointing, params=counts,
                          weights=weights, autocast_copies=2 * matmul_parameters(model, stage, lora_r, targets),
                          gradients=4 * counts.trained, optimizer=8 * counts.trained, activations=activations,
                          workspace=workspace)


class CountingTokenizer:
    """Enough of a tokenizer for building configs to count parameters: the placeholders' ids and
    special ids (the real vocabularies are set from ``LM_SHAPES``/BERT-base)."""

    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2

    def __len__(self) -> int:
        return 1024

    def convert_tokens_to_ids(self, token: str) -> int:
        return {IMAGE_TOKEN: 1022, CLUE_TOKEN: 1023}[token]


def counting_tokenizer():
    return CountingTokenizer()


# ---------------------------------------------------------------------------------------------
# Measuring what a step holds (CPU or GPU)
# ---------------------------------------------------------------------------------------------


def saved_tensor_bytes(model, step) -> int:
    """Bytes of the distinct storages autograd saves for the backward pass while ``step()`` runs
    its forward (parameters and buffers excluded; bf16 weight copies made by autocast included):
    the measured counterpart of ``activations + autocast_copies``. Call ``step`` without
    gradient checkpointing (checkpointing installs its own saved-tensor hooks)."""
    owned = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    seen: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in owned and storage.device.type != "meta":
            seen.setdefault(storage.data_ptr(), storage.nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        step()
    return sum(seen.values())


def state_bytes(model, optimizer=None) -> dict[str, int]:
    """Bytes held now by parameters + buffers, by gradients, and by the optimizer's per-parameter
    tensors (AdamW: exp_avg, exp_avg_sq; its scalar ``step`` tensors are left out)."""
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    states = 0
    if optimizer is not None:
        for state in optimizer.state.values():
            states += sum(v.numel() * v.element_size() for k, v in state.items() if torch.is_tensor(v) and k != "step")
    return {"weights": weights, "gradients": grads, "optimizer": states}


# ---------------------------------------------------------------------------------------------
# The plan: which LM size and LoRA rank fit on which card (docs/MEMORY_PLAN.md)
# ---------------------------------------------------------------------------------------------

CARDS_GIB = (24, 48, 80)
PLAN_SIZES = ("1b", "3b", "7b", "8b")
PLAN_RANKS = (8, 16, 64)
# Usable share of a card: the rest goes to the CUDA context, cuBLAS/attention workspaces and
# allocator fragmentation, none of which the estimate counts.
USABLE = 0.9


def fits(estimate: MemoryEstimate, estimate_with_checkpointing: MemoryEstimate, card_gib: float) -> str:
    """"yes" (fits as is), "ckpt" (only with gradient checkpointing) or "no"."""
    budget = USABLE * card_gib * GIB
    if estimate.total <= budget:
        return "yes"
    return "ckpt" if estimate_with_checkpointing.total <= budget else "no"


def plan_markdown(batch: int = 8, seq_len: int = 256, pretrain_batches=(32, 64, 128), sentence_len: int = 48) -> str:
    """The tables of docs/MEMORY_PLAN.md (``python benchmarks/gpu.py --memory-plan``)."""
    tokenizer = counting_tokenizer()
    cards = " | ".join(f"{card} GB" for card in CARDS_GIB)
    rule = "|---" * (4 + len(CARDS_GIB)) + "|"
    lines = [f"Finetune (LoRA on q/k/v/o, perception frozen and cached), batch {batch}, {seq_len} LM tokens per study:",
             "", f"| LM | LoRA r | GiB | GiB with checkpointing | {cards} |", rule]
    breakdown = None
    for size in PLAN_SIZES:
        model = build_measurement_model("finetune", size, tokenizer, device="meta")
        for rank in PLAN_RANKS:
            plain, ckpt = (estimate_memory("finetune", size, rank, batch, seq_len, gradient_checkpointing=flag,
                                           model=model) for flag in (False, True))
            if (size, rank) == ("7b", 16):
                breakdown = plain
            cells = " | ".join(fits(plain, ckpt, card) for card in CARDS_GIB)
            lines.append(f"| {size} ({plain.params.total / 1e9:.2f}B) | {rank} | {plain.gib():.1f} | {ckpt.gib():.1f} | {cells} |")
    model = build_measurement_model("pretrain", "7b", tokenizer, device="meta")
    lines += ["", f"Pretrain (ViT-B/16 at 224 px, 2 views per study, + BERT-base; {sentence_len} sentence tokens, "
              f"{2 * 14} prompts of {PROMPT_TOKENS} tokens), every weight trained:", "",
              f"| studies per batch | GiB | GiB with checkpointing | {cards} |", "|---" * (3 + len(CARDS_GIB)) + "|"]
    for studies in pretrain_batches:
        plain, ckpt = (estimate_memory("pretrain", "7b", batch=studies, seq_len=sentence_len, gradient_checkpointing=flag,
                                       model=model) for flag in (False, True))
        cells = " | ".join(fits(plain, ckpt, card) for card in CARDS_GIB)
        lines.append(f"| {studies} | {plain.gib():.1f} | {ckpt.gib():.1f} | {cells} |")
    parts = ("weights", "autocast_copies", "gradients", "optimizer", "activations", "workspace")
    lines += ["", "Parts of one row (7b, LoRA r=16, no checkpointing), GiB:", "",
              "| " + " | ".join(parts) + " | total |", "|---" * (len(parts) + 1) + "|",
              "| " + " | ".join(f"{breakdown.gib(part):.2f}" for part in parts) + f" | {breakdown.gib():.2f} |"]
    return "\n".join(lines)
