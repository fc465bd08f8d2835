"""The preset schema (DESIGN §3): closed, typed, self-documenting pydantic models.

Every field's docstring is what `igm presets show` and the docs print beside it.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

DatasetName = Literal["mfeat", "crema-d", "kinetics-sounds", "nvgesture", "twitter2015", "sarcasm"]
MetricName = Literal["accuracy", "macro_f1", "map"]
Probability = Annotated[float, Field(ge=0.0, lt=1.0)]
PathComponent = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")]
"""One path component (run directories are named after it): no `/`, no `..`, no leading dot."""
LayerCount = Annotated[int, Field(gt=0, le=64)]
"""Blocks of one ResNet stage: bounded so a hostile preset cannot describe a million layers."""
MAX_LAYERS = 32  # hidden layers of an MLP, stages of a ResNet, widths of a head


class Section(BaseModel):
    """Base of every preset section: unknown keys are errors, docstrings document fields."""

    # allow_inf_nan=False: every float of a preset is finite (lr: .inf would only diverge later)
    model_config = ConfigDict(
        extra="forbid", use_attribute_docstrings=True, validate_assignment=True, allow_inf_nan=False
    )


class MlpEncoder(Section):
    """A small MLP encoder for vector features (the embedded dataset's views)."""

    name: Literal["mlp"] = "mlp"
    """Encoder registry key."""
    hidden: Annotated[list[Annotated[int, Field(gt=0)]], Field(max_length=MAX_LAYERS)] = [128]
    """Widths of the hidden layers (Linear → BatchNorm → ReLU each)."""
    dim: Annotated[int, Field(gt=0)] = 64
    """Feature size d of z = φ(x), the input of the head."""
    batchnorm: bool = True
    """BatchNorm1d after every hidden Linear."""
    dropout: Probability = 0.0
    """Dropout before the feature output."""

    @property
    def feature_dim(self) -> int:
        """d, the size of z = φ(x)."""
        return self.dim


class ResNetEncoder(Section):
    """A 2-D ResNet (transformers' ResNetModel) trained from scratch, as in the paper.

    Spectrograms (B, F, T) enter as one-channel images; frames (B, T, 3, H, W) go one by
    one through the same network and the maps are averaged over time and space.
    """

    name: Literal["resnet18"] = "resnet18"
    """Encoder registry key (defaults give ResNet-18: basic blocks, depths 2-2-2-2)."""
    widths: Annotated[list[Annotated[int, Field(gt=0)]], Field(min_length=1, max_length=MAX_LAYERS)] = [
        64,
        128,
        256,
        512,
    ]
    """Channels of each stage; the last is the feature size d (shrink for tests)."""
    depths: Annotated[list[LayerCount], Field(min_length=1, max_length=MAX_LAYERS)] = [2, 2, 2, 2]
    """Residual blocks per stage."""
    embedding: Annotated[int, Field(gt=0)] = 64
    """Channels of the stem convolution."""

    @model_validator(mode="after")
    def _same_length(self) -> ResNetEncoder:
        if len(self.widths) != len(self.depths):
            raise ValueError(f"widths and depths need the same length (got {self.widths}, {self.depths})")
        return self

    @property
    def feature_dim(self) -> int:
        """d, the size of z = φ(x)."""
        return self.widths[-1]


class I3dEncoder(Section):
    """I3D (Inception-v1 inflated to 3-D) for clips (B, T, C, H, W); feature = mean-pooled Mixed_5c.

    Parameter names load the public pytorch-i3d weights once converted with `igm convert
    i3d`; a branch with another channel count (depth) keeps a fresh first convolution.
    """

    name: Literal["i3d"] = "i3d"
    """Encoder registry key."""
    weights: str | None = None
    """Converted .safetensors (`igm convert i3d`), relative to the working directory; null: random init."""
    width_divisor: Annotated[int, Field(ge=1)] = 1
    """Divide every layer's channels (1 = the real network; > 1 only for tiny test models)."""
    pool_frames: Annotated[int, Field(ge=1)] = 8
    """Temporal positions Mixed_5c must have (the release pools 8): clips need 8·(pool_frames−1)+1 frames."""

    @property
    def feature_dim(self) -> int:
        """Feature size d = Mixed_5c's channels (1024 for the real network)."""
        from .models.i3d import MIXED

        widths = [max(1, w // self.width_divisor) for w in MIXED["Mixed_5c"]]
        return widths[0] + widths[2] + widths[4] + widths[5]

    @property
    def min_frames(self) -> int:
        """Fewest frames an input clip may have."""
        return 8 * (self.pool_frames - 1) + 1


class BertEncoder(Section):
    """BERT (transformers' BertModel) on stored token rows; the feature is the [CLS] hidden state.

    `weights`: a local save_pretrained folder or a hub id (pretrained, as the paper's
    bert-base-uncased), or null for random initialisation with the sizes below.
    """

    name: Literal["bert"] = "bert"
    """Encoder registry key."""
    weights: str | None = "bert-base-uncased"
    """Pretrained weights: local folder or hub id; null = random init from the sizes below."""
    hidden: Annotated[int, Field(gt=0)] = 768
    """Hidden size = feature size d (must match the weights' config when weights are given)."""
    layers: Annotated[int, Field(gt=0)] = 12
    """Transformer layers (random init only)."""
    heads: Annotated[int, Field(gt=0)] = 12
    """Attention heads (random init only; must divide hidden)."""
    intermediate: Annotated[int, Field(gt=0)] = 3072
    """Feed-forward width (random init only)."""
    vocab_size: Annotated[int, Field(gt=0)] = 30522
    """Vocabulary size (random init only; at least the tokenizer's, checked against the manifest)."""
    max_positions: Annotated[int, Field(gt=0)] = 512
    """Position embeddings (random init only; at least the stored token length)."""

    @model_validator(mode="after")
    def _heads_divide(self) -> BertEncoder:
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        return self

    @property
    def feature_dim(self) -> int:
        """d, the size of z = φ(x)."""
        return self.hidden


class ResNet50Encoder(Section):
    """A bottleneck ResNet (transformers' ResNet; ResNet-50 by default) on images.

    feature `logits`: the ImageNet classifier is kept and its `classes` logits are the
    feature, as the reference does (the image head then starts with Linear(1000, 768));
    `pooled`: the pooled last-stage map (2048 for ResNet-50).
    """

    name: Literal["resnet50"] = "resnet50"
    """Encoder registry key."""
    weights: str | None = "microsoft/resnet-50"
    """Pretrained ResNetForImageClassification: local folder or hub id; null = random init."""
    feature: Literal["logits", "pooled"] = "logits"
    """logits (reproduces the paper) or the pooled map."""
    widths: Annotated[list[Annotated[int, Field(gt=0)]], Field(min_length=1)] = [256, 512, 1024, 2048]
    """Output channels of each stage (random init only)."""
    depths: Annotated[list[Annotated[int, Field(gt=0)]], Field(min_length=1)] = [3, 4, 6, 3]
    """Bottleneck blocks per stage (random init only)."""
    embedding: Annotated[int, Field(gt=0)] = 64
    """Stem channels (random init only)."""
    classes: Annotated[int, Field(gt=0)] = 1000
    """Classifier outputs, the feature size with feature=logits (ImageNet: 1000)."""

    @model_validator(mode="after")
    def _same_length(self) -> ResNet50Encoder:
        if len(self.widths) != len(self.depths):
            raise ValueError(f"widths and depths need the same length (got {self.widths}, {self.depths})")
        return self

    @property
    def feature_dim(self) -> int:
        """d, the size of z = φ(x)."""
        return self.classes if self.feature == "logits" else self.widths[-1]


class ClipEncoder(Section):
    """A CLIP tower via transformers (Figure 5b): `clip-text` on token rows, `clip-vision` on images.

    The feature is the tower's pooled output: the final hidden state of the last real token
    (CLIP's end-of-text token) for text, the layer-normed class token for images.
    """

    name: Literal["clip-text", "clip-vision"] = "clip-text"
    """Encoder registry key."""
    weights: str | None = "openai/clip-vit-base-patch32"
    """Pretrained CLIP (full model or one tower): local folder or hub id; null = random init."""
    hidden: Annotated[int, Field(gt=0)] = 512
    """Hidden size = feature size d (ViT-B/32: text 512, vision 768)."""
    layers: Annotated[int, Field(gt=0)] = 12
    """Transformer layers (random init only)."""
    heads: Annotated[int, Field(gt=0)] = 8
    """Attention heads (random init only)."""
    intermediate: Annotated[int, Field(gt=0)] = 2048
    """Feed-forward width (random init only)."""
    vocab_size: Annotated[int, Field(gt=0)] = 49408
    """clip-text: vocabulary size (random init only)."""
    max_positions: Annotated[int, Field(gt=0)] = 77
    """clip-text: position embeddings (random init only; CLIP's 77 limits --max-tokens)."""
    patch: Annotated[int, Field(gt=0)] = 32
    """clip-vision: patch size (random init only)."""
    image_size: Annotated[int, Field(gt=0)] = 224
    """clip-vision: image side of the position embeddings (other sizes are interpolated)."""

    @property
    def feature_dim(self) -> int:
        """d, the size of z = φ(x)."""
        return self.hidden


EncoderSpec = Annotated[
    Union[MlpEncoder, ResNetEncoder, I3dEncoder, BertEncoder, ResNet50Encoder, ClipEncoder],  # noqa: UP007
    Field(discriminator="name"),
]


class InputSpec(Section):
    """How a batch of stored samples becomes the encoder's input (on the training device)."""

    kind: Literal["vector", "spectrogram", "frames", "clip", "tokens", "image"] = "vector"
    """vector: as stored; spectrogram: (B,F,T) → (B,1,F,T); frames: uint8 (B,T,3,H,W) → normalised;
    clip: uint8 (B,T,C,H,W) → a random window and crop (train) or all frames, centre crop (eval);
    tokens: int (B,3,L) ids/mask/types straight to the encoder; image: uint8 (B,3,H,W) like one frame."""
    tokens: Annotated[int, Field(gt=0)] | None = None
    """tokens: the stored token length the preset expects (null: whatever the data has)."""
    size: Annotated[int, Field(gt=0)] = 224
    """frames: output side length (training crop and evaluation resize)."""
    crop_scale: tuple[Annotated[float, Field(gt=0, le=1)], Annotated[float, Field(gt=0, le=1)]] = (0.08, 1.0)
    """frames: area range of the training random resized crop."""
    flip: bool = True
    """frames: random horizontal flip in training (clips are never flipped: flow x would flip sign)."""
    mean: Annotated[list[float], Field(min_length=1)] = [0.485, 0.456, 0.406]
    """frames, clip: per-channel mean of the values scaled to [0, 1] (ImageNet; one per stored channel)."""
    std: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)] = [0.229, 0.224, 0.225]
    """frames, clip: per-channel std (ImageNet)."""
    window: Annotated[int, Field(gt=0)] | None = None
    """clip: frames of the random training window (null: all stored frames); evaluation uses all."""
    shared_view: bool = True
    """clip: the training window and crop of a sample are shared by every clip modality that says so."""


class Modality(Section):
    """One modality: its name in the prepared data, its input pipeline and its encoder."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9_]+$")]
    """Modality name as in the prepared data's manifest."""
    input: InputSpec = InputSpec()
    """Input pipeline (augmentation in training, deterministic in evaluation)."""
    encoder: EncoderSpec = MlpEncoder()
    """Encoder φ of this modality's branch."""
    adapter: list[Annotated[int, Field(gt=0)]] = []
    """Widths of Linear layers (no activation) between the feature and the head (image: [768])."""


class Head(Section):
    """Per-branch head Linear(d,w1) → ReLU → Linear(w1,w2) → Linear(w2,C) (paper §4.2)."""

    widths: Annotated[list[Annotated[int, Field(gt=0)]], Field(min_length=1, max_length=MAX_LAYERS)] = [
        256,
        64,
    ]
    """Hidden widths; ReLU follows the first Linear only, as in the paper."""


class Stages(Section):
    """Alternating unimodal stages (Algorithm 1)."""

    epochs: Annotated[list[Annotated[int, Field(gt=0)]], Field(min_length=1)] = [5, 5]
    """Epochs of each stage; stage s trains modalities[s mod m]."""


class Optimizer(Section):
    """Base optimizer, created afresh at the start of every stage."""

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    """Optimizer registry key."""
    lr: Annotated[float, Field(gt=0)] = 0.01
    """Learning rate η."""
    momentum: Probability = 0.9
    """SGD momentum."""
    weight_decay: Annotated[float, Field(ge=0)] = 1e-4
    """Weight decay (coupled L2 for sgd/adam, decoupled for adamw); not projected by T."""
    betas: tuple[Probability, Probability] = (0.9, 0.999)
    """Adam betas."""
    clip_norm: Annotated[float, Field(gt=0)] | None = None
    """Clip the global gradient norm of each step to this (null: no clipping; DGL's authors use 40)."""


class Schedule(Section):
    """Learning-rate schedule over the epochs of one stage (restarts every stage)."""

    name: Literal["constant", "step", "cosine"] = "step"
    """constant, step (multiply by gamma every step_size epochs) or cosine to zero."""
    step_size: Annotated[int, Field(gt=0)] = 40
    """Epochs between decays for `step`."""
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.1
    """Decay factor for `step`."""
    first_epoch_factor: Annotated[float, Field(gt=0, le=1)] = 1.0
    """LR multiplier in a stage's first epoch (the text presets use 2/3)."""


class Gm(Section):
    """Flat projection-based gradient modification (Eq. 2–5)."""

    enabled: bool = True
    """Apply T of the previous modality to the active head's weight gradients."""
    tau: Annotated[float, Field(gt=0)] = 0.4
    """Scaling factor τ of Eq. 4; T's eigenvalues lie in [exp(-τ), 1]."""
    scope: Literal["head", "fraction"] = "head"
    """Layers GM acts on: head (its Linears, the paper's default) or fraction (paper Table 4)."""
    fraction: Annotated[float, Field(gt=0, le=1)] = 0.3
    """scope=fraction: share of each branch's parameters, taken from the classifier back (Table 4)."""
    targets: list[str] | None = None
    """Modalities whose training T modifies (null: all); [video] is the paper's "w/o a-GM" (Table 3)."""


class Sam(Section):
    """Sharpness-aware minimisation (Eq. 6–8)."""

    rho: Annotated[float, Field(ge=0)] = 0.05
    """Radius ρ of IGM's (and MIE's) perturbation; 0 means a plain step with no second pass."""
    baseline_rho: Annotated[float, Field(ge=0)] = 0.0
    """ρ of every other method (joint, unimodal, mla, dgl); 0 = the plain method, as the papers' baselines."""
    ddp: Literal["global", "local"] = "global"
    """Under torchrun: global = all-reduce the first-pass gradient before ε (equals one process with
    the global batch); local = each rank perturbs with its own gradient (m-sharpness, one all-reduce less)."""


class Data(Section):
    """Batching."""

    batch_size: Annotated[int, Field(gt=0)] = 12
    """Training batch size (also the batch of the covariance pass, paper §4.2)."""
    eval_batch_size: Annotated[int, Field(gt=0)] = 256
    """Batch size for evaluation."""


class Baseline(Section):
    """Settings of the `joint` and `unimodal` methods."""

    epochs: Annotated[int, Field(gt=0)] | None = None
    """Epochs; null = the most epochs IGM's stages give any one modality (equal budget)."""
    joint_loss: Literal["fused", "sum"] = "fused"
    """joint: CE of the fused prediction (usual joint training) or the sum of branch CEs."""
    modality: str | None = None
    """unimodal: the branch to train; null = the first modality."""


class Mla(Section):
    """MLA (Zhang et al. CVPR 2024): one shared head, per-batch alternation, OWM projection."""

    alpha: Annotated[float, Field(gt=0)] = 1.0
    """α of the projector update P ← P − (P x̄)(P x̄)ᵀ/(α + x̄ᵀ P x̄) (scalar denominator, paper)."""
    projection: Literal["paper", "released", "off"] = "paper"
    """paper: the OWM projection as stated; released: the authors' code (no projection, batch-axis
    entropy fusion; listed under deviations); off: no projection, per-sample fusion."""


class Dgl(Section):
    """DGL (Wei, Luo, Luo ICCV 2025): detached fusion module, unimodal losses by zeroing features."""

    alpha: Annotated[float, Field(gt=0)] = 4.0
    """Encoders receive α·∇Σ_m L_m (the authors use 4 on CREMA-D, 2–3 on Kinetics-Sounds)."""
    fusion: Literal["concat", "sum"] = "concat"
    """concat: Linear(Σd, C) on the concatenated features; sum: Σ_m Linear(d_m, C)(z_m)."""


class Mie(Section):
    """MIE (the IGM group's earlier paper): the choices its §3.2 leaves open."""

    covariance: Literal["uncentred", "centred"] = "uncentred"
    """uncentred: Σ_t z̄_t z̄_tᵀ (as IGM's Eq. 2); centred: Σ_t of each batch's covariance about z̄_t."""
    layers: Literal["head", "penultimate"] = "head"
    """head: T on every head Linear; penultimate: only the layer before the classifier (§3.2's example)."""


class Reference(Section):
    """`recipe: reference`: the released code's behaviour (released-code.md §3–§6), one key per departure.

    Read only with `recipe: reference`; every key that departs from the paper is listed under
    `deviations` in results.json. Set one back (e.g. `reference.test_selection=false`) to drop it.
    """

    mixup_alpha: Annotated[float, Field(ge=0)] = 1.0
    """Beta(α, α) mixup of the active modality's input every step (code: 1.0, Twitter 0.9; 0: none);
    token inputs (text) are never mixed."""
    flat_ratio: Annotated[float, Field(ge=0, le=1)] = 0.3
    """r of the code's loss (1 − r)·mixupCE(o) + r·CE(o′, y), o′ the head re-applied to the features."""
    code_sam: bool = True
    """The code's "SAM": every tensor of the active encoder and head moved by ρ·g/‖g‖ (per-tensor
    norm, autograd.grad), never restored; false: the paper's SAM with sam.rho (global norm, restored)."""
    rho: Annotated[float, Field(ge=0)] | None = None
    """ρ of the code's perturbation (null: sam.rho). Never restored, a ρ that acts (0.05) walks the
    weights up the gradient every step; the code's 1e-10 / 1e-15 are no-ops in float32."""
    restart_from_best: bool = True
    """Each stage starts from the best checkpoint so far (then T, a new optimizer and schedule)."""
    augmented_covariance: bool = True
    """The covariance pass for T runs on training batches with training augmentation (model in eval mode)."""
    unguarded_t: bool = True
    """T exactly as the code: no clamp, no identity fallback (a flat spectrum gives NaN, reported)."""
    test_selection: bool = True
    """The best epoch is selected on the test split (the published protocol), not on validation."""
    eval_batch_size: Annotated[int, Field(gt=0)] | None = 64
    """Evaluation batch of the code (null: data.eval_batch_size)."""
    mean_fusion: bool = True
    """Fuse by the mean of the branch softmaxes whatever `fusion` says."""
    drop_last: bool = True
    """The code's training loader drops a short last batch (in training and in T's pass)."""
    lr_step_before_epoch: bool = True
    """The code calls StepLR.step() before each epoch: a stage's step decay comes one epoch early."""


MethodName = Literal["igm", "joint", "unimodal", "mla", "dgl", "mie"]


class Preset(Section):
    """A complete, resolved description of one training run."""

    name: PathComponent = "custom"
    """Preset name (used in run directory names, so one path component)."""
    description: str = ""
    """One line shown by `igm presets list`."""
    dataset: DatasetName = "mfeat"
    """Dataset registry key; the prepared data must match it."""
    num_classes: Annotated[int, Field(gt=1)] | None = None
    """Classes the prepared data must have (null: whatever it has)."""
    method: MethodName = "igm"
    """igm (alternating stages + GM + SAM), joint (all branches at once), unimodal, mla, dgl or mie."""
    method_defaults: dict[MethodName, dict] = {}
    """Per-method settings applied under --set when that method is chosen (e.g. MLA's own lr)."""
    recipe: Literal["paper", "reference"] = "paper"
    """paper: the method as the paper states it (validation-split model selection); reference (method
    igm): the released code's training, its departures listed under `deviations` (section `reference`)."""
    modalities: Annotated[list[Modality], Field(min_length=1)]
    """Branches in stage order."""
    head: Head = Head()
    """Per-branch classification head."""
    stages: Stages = Stages()
    """Stage schedule of method igm."""
    optimizer: Optimizer = Optimizer()
    """Optimizer settings."""
    schedule: Schedule = Schedule()
    """Learning-rate schedule."""
    gm: Gm = Gm()
    """Gradient modification."""
    sam: Sam = Sam()
    """SAM."""
    data: Data = Data()
    """Batching."""
    baseline: Baseline = Baseline()
    """Baseline methods."""
    mla: Mla = Mla()
    """Method mla."""
    dgl: Dgl = Dgl()
    """Method dgl."""
    mie: Mie = Mie()
    """Method mie."""
    reference: Reference = Reference()
    """Switches of `recipe: reference`."""
    fusion: Literal["mean", "entropy", "entropy_logits"] = "mean"
    """Late fusion: mean of softmaxes; entropy = per-sample entropy weights on the probabilities;
    entropy_logits = the same weights on the logits, then softmax (MLA's own fusion)."""
    selection: MetricName = "macro_f1"
    """Validation metric of the fused model that selects the best epoch."""
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 42
    """Seed of initialisation, shuffling and dropout (0 ≤ seed < 2³², what NumPy accepts)."""
    device: Annotated[str, Field(pattern=r"^(cpu|auto|mps|cuda(:[0-9]{1,3})?)$")] = "cpu"
    """torch device: cpu, cuda, cuda:N, mps or auto."""
    threads: Annotated[int, Field(gt=0)] | None = None
    """CPU threads of torch; null = 1 for models under 500k parameters, else torch's default."""

    @model_validator(mode="after")
    def _check_cross_fields(self) -> Preset:
        names = [m.name for m in self.modalities]
        problems = []
        if len(set(names)) != len(names):
            problems.append(f"modalities: names must be unique (got {names})")
        if self.method != "unimodal" and len(names) < 2:
            problems.append(f"modalities: method {self.method} needs at least 2 (got {names})")
        unknown = [t for t in self.gm.targets or [] if t not in names]
        if unknown:
            problems.append(f"gm.targets: {unknown} not among the modalities {names}")
        if self.recipe == "reference" and self.method != "igm":
            problems.append(
                f"recipe: reference reproduces the released IGM code; it needs method igm (got {self.method})"
            )
        if self.baseline.modality is not None and self.baseline.modality not in names:
            problems.append(f"baseline.modality: must be one of {names} (got {self.baseline.modality!r})")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def code_sam_rho(self) -> float | None:
        """ρ of recipe reference's in-step perturbation, or None when that perturbation is off."""
        if self.recipe != "reference" or not self.reference.code_sam:
            return None
        return self.sam.rho if self.reference.rho is None else self.reference.rho

    @property
    def modality_names(self) -> list[str]:
        """Names of the modalities in stage order."""
        return [m.name for m in self.modalities]
