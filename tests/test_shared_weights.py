"""The weight sync's bucket stream (trainer/rollout/weight_sync.py): how a layout is cut into buckets, and
what a receiver process gets over gloo, by broadcast (collective) and through /dev/shm (shared_memory)."""

import json
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

from trainer.rollout.weight_sync import (BucketChannel, SyncGroup, TensorMeta, buffer_bytes, create_shared_file,
                                         describe, layout_bytes, plan_buckets, shared_memory_room, unit_of)

ROOT = Path(__file__).parents[1]
F32 = torch.float32


def test_units_are_decoder_layers_or_the_holding_module():
    assert unit_of("model.layers.3.mlp.up_proj.weight") == "model.layers.3"
    assert unit_of("model.layers.12.self_attn.q_proj.bias") == "model.layers.12"
    assert unit_of("model.visual.blocks.0.attn.qkv.weight") == "model.visual.blocks.0"
    assert unit_of("model.embed_tokens.weight") == "model.embed_tokens"
    assert unit_of("lm_head.weight") == "lm_head"


def test_buckets_hold_whole_layers_at_aligned_offsets():
    layout = [
        TensorMeta("model.embed_tokens.weight", (100,), F32),          # 400 bytes -> 448 aligned
        TensorMeta("model.layers.0.self_attn.q_proj.weight", (64,), F32),  # 256
        TensorMeta("model.layers.0.self_attn.k_proj.weight", (10,), F32),  # 40 -> 64
        TensorMeta("model.layers.1.self_attn.q_proj.weight", (64,), F32),  # 256
        TensorMeta("model.layers.1.self_attn.k_proj.weight", (10,), F32),  # 64
        TensorMeta("model.norm.weight", (8,), torch.bfloat16),         # 16 -> 64
        TensorMeta("lm_head.weight", (300,), F32),                     # 1200 -> 1216, more than a bucket
    ]
    buckets = plan_buckets(layout, bucket_bytes=800)
    names = [[m.name.split(".")[-3] if "layers" in m.name else m.name for m in b.metas] for b in buckets]
    # embed (448) + layer 0 (320) = 768 <= 800; layer 1 (320) would pass 800, so a new bucket; norm joins it;
    # the head alone is larger than a bucket and travels alone.
    assert [len(b.metas) for b in buckets] == [3, 3, 1]
    assert names[0][0] == "model.embed_tokens.weight" and names[2] == ["lm_head.weight"]
    assert [b.offsets for b in buckets] == [(0, 448, 704), (0, 256, 320), (0,)]
    assert [b.nbytes for b in buckets] == [768, 384, 1216]
    assert buffer_bytes(buckets) == 1216
    assert layout_bytes(layout) == 400 + 256 + 40 + 256 + 40 + 16 + 1200
    # A bucket as large as the model is one bucket.
    assert len(plan_buckets(layout, bucket_bytes=1 << 20)) == 1


def state() -> dict[str, torch.Tensor]:
    """Mixed dtypes over several buckets of 200 bytes."""
    return {
        "model.embed_tokens.weight": torch.arange(40, dtype=F32).view(10, 4),
        "model.layers.0.mlp.weight": torch.linspace(-1, 1, 30, dtype=torch.bfloat16).view(5, 6),
        "model.layers.0.steps": torch.tensor([7, 8, 9], dtype=torch.int64),
        "model.layers.1.mlp.weight": torch.full((6, 5), 0.25, dtype=F32),
        "lm_head.weight": -torch.arange(40, dtype=F32).view(10, 4),
    }


def receiver(host: str, port: int, bucket_bytes: int, shared_file: str | None, out: str) -> None:
    """The engine's side, in a child process: the sums it loaded, bucket by bucket."""
    layout = describe(state().items())
    channel = BucketChannel(SyncGroup(host, port, rank=1, world_size=2), plan_buckets(layout, bucket_bytes), shared_file)
    loaded = []
    for _ in range(2):  # two syncs over the same channel
        got = {}
        for bucket in channel.receive():
            got.update({name: tensor.float().sum().item() for name, tensor in bucket.items()})
        loaded.append(got)
    Path(out).write_text(json.dumps(loaded))


@pytest.mark.parametrize("shared", [False, True], ids=["collective", "shared_memory"])
def test_a_receiver_process_loads_every_tensor_of_two_syncs(tmp_path, shared):
    if shared and not Path("/dev/shm").is_dir():
        pytest.skip("needs /dev/shm (Linux)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bucket_bytes = 200
    buckets = plan_buckets(describe(state().items()), bucket_bytes)
    assert len(buckets) == 4  # embed | layer 0 | layer 1 | head
    shared_file = f"/dev/shm/test-weights-{uuid.uuid4().hex[:8]}" if shared else None
    if shared_file:
        create_shared_file(shared_file, buffer_bytes(buckets))
    out = tmp_path / "loaded.json"
    child = subprocess.Popen([sys.executable, "-c", f"from tests.test_shared_weights import receiver; "
                              f"receiver('127.0.0.1', {port}, {bucket_bytes}, {shared_file!r}, {str(out)!r})"], cwd=ROOT)
    try:
        channel = BucketChannel(SyncGroup("127.0.0.1", port, rank=0, world_size=2), buckets, shared_file)
        first = state()
        channel.send(iter(first.items()))  # the receiver takes part: it has mapped the file
        if shared_file:
            Path(shared_file).unlink()  # both sides hold the mapping: the name can go
        second = {name: tensor * 2 for name, tensor in first.items()}
        channel.send(iter(second.items()))
        assert child.wait(timeout=120) == 0
    finally:
        child.kill()
        if shared_file:
            Path(shared_file).unlink(missing_ok=True)
    loaded = json.loads(out.read_text())
    assert loaded[0] == {name: t.float().sum().item() for name, t in first.items()}
    assert loaded[1] == {name: t.float().sum().item() for name, t in second.items()}
    assert loaded[0]["model.embed_tokens.weight"] == sum(range(40)) and loaded[1]["model.layers.0.steps"] == 48
    assert not list(Path("/dev/shm").glob("test-weights-*")) or not shared


def test_a_sender_given_tensors_out_of_layout_order_says_which():
    layout = describe(state().items())
    channel = BucketChannel.__new__(BucketChannel)  # no group: the check comes before any transfer
    channel.buckets, channel.shared = plan_buckets(layout, 1 << 20), False
    channel.buffer = torch.empty(buffer_bytes(channel.buckets), dtype=torch.uint8)
    swapped = list(state().items())
    swapped[0], swapped[1] = swapped[1], swapped[0]
    with pytest.raises(RuntimeError, match="expected model.embed_tokens.weight, the actor gave model.layers.0.mlp"):
        channel.send(iter(swapped))


def test_room_in_shared_memory():
    assert shared_memory_room(1 << 20)
    assert not shared_memory_room(1 << 60)
    assert not shared_memory_room(1, folder="/no/such/folder")


def test_a_receiver_whose_shared_file_is_gone_says_so_instead_of_loading_zeros(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    buckets = plan_buckets(describe(state().items()), 200)
    shared_file = f"/dev/shm/test-weights-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "loaded.json"
    child = subprocess.Popen([sys.executable, "-c", f"from tests.test_shared_weights import receiver; "
                              f"receiver('127.0.0.1', {port}, 200, {shared_file!r}, {str(out)!r})"],
                             cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        group = SyncGroup("127.0.0.1", port, rank=0, world_size=2)
        group.barrier()  # what the sender's channel does, without ever making the file
        _, err = child.communicate(timeout=120)
    finally:
        child.kill()
    assert child.returncode != 0 and f"weight sync: {shared_file} is gone" in err
    assert not Path(shared_file).exists() and not out.exists()
