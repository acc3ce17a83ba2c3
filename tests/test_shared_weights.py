"""rollout.weight_sync=shared_memory's buffers: what the actor writes, another process reads, with no names
left in /dev/shm once both sides hold the mapping."""

import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import torch

from trainer.rollout.weight_sync import SharedWeights, describe, layout_bytes, shared_memory_room

pytestmark = pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs /dev/shm (Linux)")


def test_a_second_process_reads_what_the_first_writes(tmp_path):
    state = {"embed.weight": torch.arange(12, dtype=torch.float32).view(3, 4), "head.weight": torch.zeros(3, 4),
             "steps": torch.tensor([7, 8], dtype=torch.int64)}
    prefix = f"/dev/shm/test-weights-{uuid.uuid4().hex[:8]}"
    layout = describe(state.items())
    assert layout_bytes(layout) == 12 * 4 + 12 * 4 + 2 * 8
    sender = SharedWeights(layout, prefix, create=True)
    reader = textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(Path(__file__).parents[1])!r})
        from trainer.rollout.weight_sync import SharedWeights, TensorMeta
        layout = [TensorMeta('embed.weight', (3, 4), torch.float32), TensorMeta('head.weight', (3, 4), torch.float32),
                  TensorMeta('steps', (2,), torch.int64)]
        views = SharedWeights(layout, {prefix!r}, create=False).views
        sys.stdin.readline()  # the writer has written
        print(float(views['embed.weight'].sum()), float(views['head.weight'][2, 3]), views['steps'].tolist())
    """)
    child = subprocess.Popen([sys.executable, "-c", reader], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        for name, tensor in state.items():
            sender.write_one(name, tensor * 2 if tensor.is_floating_point() else tensor)
        sender.write_one("head.weight", torch.full((3, 4), 1.5))
        out, _ = child.communicate("go\n", timeout=60)
    finally:
        sender.unlink()
    assert out.split() == ["132.0", "1.5", "[7,", "8]"]
    assert not list(Path("/dev/shm").glob(Path(prefix).name + "*"))


def test_room_in_shared_memory():
    assert shared_memory_room(1 << 20)
    assert not shared_memory_room(1 << 60)
    assert not shared_memory_room(1, folder="/no/such/folder")
