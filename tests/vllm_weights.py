"""Compare a vLLM engine's weights (read back through its layers) with the actor's."""

import torch


def vllm_view(actor_weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Actor (HF) weights under vLLM's names: q/k/v and gate/up are fused into one matrix each. The LM head
    is compared too: on CPU it computes with a packed copy of its (tied) weight that a sync must refresh."""
    out = {}
    for name, tensor in actor_weights.items():
        for fused, parts in (("qkv_proj", ("q_proj", "k_proj", "v_proj")), ("gate_up_proj", ("gate_proj", "up_proj"))):
            if f".{parts[0]}." in name:
                out[name.replace(parts[0], fused)] = torch.cat(
                    [actor_weights[name.replace(parts[0], p)] for p in parts]
                )
        if not any(f".{p}." in name for p in ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")):
            out[name] = tensor
    return out


def assert_same(engine_weights: dict[str, torch.Tensor], actor_weights: dict[str, torch.Tensor], when: str):
    for name, tensor in vllm_view(actor_weights).items():
        engine_tensor = engine_weights[name]
        # vLLM pads the vocabulary dimension of the embedding; compare the real rows.
        assert torch.equal(engine_tensor[: tensor.shape[0]], tensor), f"{when}: rollout {name} differs from the actor"
