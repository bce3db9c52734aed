"""An exact, cheaper pass for TRL's GRPO loss: skip zero-advantage completions, run each prompt once per group.

Why this exists: on the tiny preset about 30% of the 4 x 16 groups have all-equal rewards (every completion
wrong, or all right), so their advantages are exactly 0; and TRL right-pads every completion of a batch to the
longest one (~225 tokens when the mean is ~140). TRL still runs the forward and backward pass over all of them.
With the token-level ``dapo`` loss and ``beta = 0`` (the tiny preset) a zero-advantage row adds exactly zero to
the loss and its gradient, and the loss is normalised by the token count of the whole generation batch, which
TRL computes before the loss and passes in ``inputs["num_items_in_batch"]``. So the loss summed over chunks of
the non-zero rows (whole prompt groups packed up to ``rows_per_chunk`` rows, each chunk trimmed to its longest
completion) has the same value and gradient as TRL's single pass (a test checks this).

Second, the 16 completions of a group share one prompt (141 tokens of TinyZero's template, half of every row),
and a causal model's prompt activations do not depend on what follows. :func:`shared_prompt_logps` runs each
distinct prompt once (all but its last token, into a KV cache), gathers the cache onto each prompt's rows and runs
only the last prompt token plus the completions through the model and TRL's fused log-prob head. Positions and
the attention mask are those of the full pass, and the backward pass sums the rows' gradients into the shared
prompt, so log-probs and gradients match TRL's to float precision (a test checks both). Together they make a
tiny-preset GRPO step markedly cheaper (figures in docs/experiments.md).

TRL offers neither: its ``_get_per_token_logps_and_entropies`` chunks rows only to cap memory, keeping the
padding, the zero-advantage rows and one prompt copy per completion. What is ours is only the row selection,
the trimming and the shared prompt pass; the loss itself is TRL's ``_compute_loss``, called once per chunk, and
the log-probs come from TRL's fused head. Where the equality would not hold (another loss type, a KL term, an
entropy mask or bonus over the whole batch, multimodal inputs), :func:`lean_blockers` names why and the trainer
keeps TRL's own pass. Logged per-step metrics that TRL averages inside the loss (entropy, clip ratios) then
cover the rows trained on, not the zero-advantage ones.

TRL internals it relies on (TRL 1.16): ``GRPOTrainer._compute_loss`` and ``_get_per_token_logps_and_entropies``
(overridden), the attributes read by :func:`lean_blockers`, the input keys TRL builds (``_ROW_KEYS``, kept by
hand) and the fused log-prob head (``fused_lm_head=True``); from transformers 5.19, ``DynamicCache``'s
``batch_select_indices``. Used on the CPU path only (``grpo.lean_loss``); GPU runs keep TRL's own pass.
Remove when: TRL skips zero-advantage rows and shares prompt passes itself.
"""

from __future__ import annotations

from typing import Any

from train.cpu.versions import check_version

WRITTEN_FOR = {"trl": "1.16", "transformers": "5.19"}
_REMEDY = (
    "compare GRPOTrainer._compute_loss, _get_per_token_logps_and_entropies and the inputs TRL builds with "
    "train/cpu/lean_loss.py (_ROW_KEYS), then run tests/train/test_lean_loss.py; or set grpo.lean_loss=false"
)
# inputs TRL builds whose second dimension runs over completion tokens (trimmed with the completion)
_COMPLETION_KEYS = (
    "completion_ids",
    "completion_mask",
    "old_per_token_logps",
    "importance_sampling_ratio",
    "sampling_per_token_logps",
    "ref_per_token_logps",
    "tool_mask",
)
_ROW_KEYS = ("prompt_ids", "prompt_mask", "advantages", *_COMPLETION_KEYS)


def lean_blockers(trainer: Any, inputs: dict[str, Any]) -> list[str]:
    """Why the lean pass would not equal TRL's loss for this trainer and batch (empty list: it does)."""
    why = []
    if trainer.loss_type != "dapo":
        why.append(f"loss_type={trainer.loss_type!r} (only 'dapo' normalises by the generation batch's tokens)")
    if trainer.beta != 0.0:
        why.append(f"beta={trainer.beta} (a KL term makes zero-advantage rows count)")
    if trainer.top_entropy_quantile < 1.0:
        why.append("top_entropy_quantile < 1 (the entropy mask is a quantile over the whole batch)")
    if getattr(trainer, "_entropy_bonus_enabled", False):
        why.append("an entropy bonus (it averages over every row)")
    if getattr(trainer, "aux_loss_enabled", False):
        why.append("a router auxiliary loss")
    extra = sorted(k for k in inputs if k not in _ROW_KEYS and k != "num_items_in_batch")
    if extra:
        why.append(f"inputs TRL builds for other models: {extra}")
    return why


def prompt_groups(prompt_ids: Any, prompt_mask: Any) -> Any:
    """For each row, the index of its distinct (prompt ids, prompt mask) among the batch's."""
    import torch

    return torch.unique(torch.cat([prompt_ids, prompt_mask], dim=1), dim=0, return_inverse=True)[1]


def lean_chunks(inputs: dict[str, Any], rows_per_chunk: int) -> list[dict[str, Any]]:
    """The non-zero-advantage rows of ``inputs`` in chunks of at most ``rows_per_chunk`` rows, each trimmed to its
    longest completion. A prompt group is never split unless it alone exceeds ``rows_per_chunk``; whole groups are
    packed together in order of their longest completion (fewer, larger passes, little padding). One row is kept
    when every advantage is 0, so that the loss still has a graph to run backward through (its gradient is 0)."""
    import torch

    if rows_per_chunk < 1:
        raise ValueError(f"rows_per_chunk must be >= 1, got {rows_per_chunk}")
    adv = inputs["advantages"]
    adv_rows = adv if adv.dim() == 1 else adv.abs().amax(dim=1)
    keep = torch.nonzero(adv_rows != 0).flatten()
    if keep.numel() == 0:
        keep = torch.zeros(1, dtype=torch.long, device=adv.device)
    lengths = inputs["completion_mask"].sum(dim=1)
    group = prompt_groups(inputs["prompt_ids"], inputs["prompt_mask"])
    # sort by (group, length): lengths < 2**20 tokens
    keep = keep[torch.argsort(group[keep] * 2**20 + lengths[keep], stable=True)]
    pieces = []
    for g in torch.unique_consecutive(group[keep]):
        rows = keep[group[keep] == g]
        pieces += [rows[i : i + rows_per_chunk] for i in range(0, rows.numel(), rows_per_chunk)]
    pieces.sort(key=lambda rows: int(lengths[rows].max()))
    packed: list[list[Any]] = []
    for rows in pieces:
        if packed and sum(r.numel() for r in packed[-1]) + rows.numel() <= rows_per_chunk:
            packed[-1].append(rows)
        else:
            packed.append([rows])
    chunks = []
    for parts in packed:
        rows = torch.cat(parts)
        width = max(int(lengths[rows].max()), 1)
        chunk: dict[str, Any] = {"num_items_in_batch": inputs["num_items_in_batch"]}
        for key in _ROW_KEYS:
            value = inputs.get(key)
            if value is None:
                continue
            value = value[rows]
            if key in _COMPLETION_KEYS:
                value = value[:, :width]
            chunk[key] = value
        chunks.append(chunk)
    return chunks


def shared_prompt_logps(
    model: Any, input_ids: Any, attention_mask: Any, logits_to_keep: int, autocast: Any
) -> tuple[Any, Any]:
    """Per-token log-probs and entropies of the last ``logits_to_keep`` tokens (TRL's fused head, as in its
    ``_get_per_token_logps_and_entropies``), running each distinct prompt once for all rows that share it: one
    pass over the distinct prompts into a KV cache, whose rows are then gathered per completion row."""
    import torch
    from transformers import DynamicCache

    prompt_len = input_ids.size(1) - logits_to_keep
    group = prompt_groups(input_ids[:, :prompt_len], attention_mask[:, :prompt_len])
    n_groups = int(group.max()) + 1
    # the first row of each distinct prompt (scatter_reduce "amin" over row indices)
    rows = torch.arange(group.numel(), device=group.device)
    first = torch.full((n_groups,), group.numel(), device=group.device).scatter_reduce(0, group, rows, "amin")
    cache = DynamicCache()
    with autocast():
        # all prompt tokens but the last, once per prompt: the last one's output scores the first completion token
        model.base_model(
            input_ids=input_ids[first, : prompt_len - 1],
            attention_mask=attention_mask[first, : prompt_len - 1],
            past_key_values=cache,
            use_cache=True,
        )
        cache.batch_select_indices(group)  # each row gets its prompt's keys and values (backward sums them)
        tail = input_ids[:, prompt_len - 1 :]
        labels = tail.masked_fill(attention_mask[:, prompt_len - 1 :] == 0, -100)
        labels[:, 0] = -100  # the last prompt token is context, not a scored completion token
        out = model(
            input_ids=tail,
            attention_mask=attention_mask,
            past_key_values=cache,
            labels=labels,
            fused_lm_head=True,
        )
    return out.log_probs.float(), out.entropy.float()


def lean_trainer_class(base: type, rows_per_chunk: int) -> type:
    """A subclass of TRL's ``GRPOTrainer`` (``base``) whose ``compute_loss`` takes the lean pass where it is exact.

    The reasons it cannot are printed once per run (never silently)."""
    for dist, version in WRITTEN_FOR.items():
        check_version(dist, version, "lean_loss", _REMEDY)

    class LeanGRPOTrainer(base):  # type: ignore[misc, valid-type]
        _lean_warned = False

        def compute_loss(
            self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            blockers = lean_blockers(self, inputs)
            if blockers or return_outputs:
                if blockers and not self._lean_warned:
                    print(f"grpo.lean_loss: using TRL's full loss pass because of {'; '.join(blockers)}")
                    type(self)._lean_warned = True
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            chunks = lean_chunks(inputs, rows_per_chunk)
            self._lean_shared_prompt = True  # read by _get_per_token_logps_and_entropies below
            try:
                loss = self._compute_loss(model, chunks[0])
                for chunk in chunks[1:]:
                    loss = loss + self._compute_loss(model, chunk)
            finally:
                self._lean_shared_prompt = False
            return loss

        def _get_per_token_logps_and_entropies(
            self, model: Any, input_ids: Any, attention_mask: Any, logits_to_keep: int, *args: Any, **kwargs: Any
        ) -> Any:
            plain = ("batch_size", "compute_entropy", "compute_aux_loss")
            multimodal = any(v is not None for k, v in kwargs.items() if k not in plain)
            if (
                not getattr(self, "_lean_shared_prompt", False)
                or args
                or multimodal
                or kwargs.get("compute_aux_loss")
                or input_ids.size(1) - logits_to_keep < 2
            ):
                return super()._get_per_token_logps_and_entropies(
                    model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
                )
            logps, entropies = shared_prompt_logps(
                model, input_ids, attention_mask, logits_to_keep, self.accelerator.autocast
            )
            return logps, entropies if kwargs.get("compute_entropy") else None, None

    return LeanGRPOTrainer
