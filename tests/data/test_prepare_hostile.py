"""`igm prepare` against truncated media and a parent that is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from igm_cli.cli import app
from igm_cli.data.audio import N_FFT, AudioSpec, spectrogram_of
from igm_cli.data.base import MediaError
from tests.raw_factories import make_crema_d, write_wav

runner = CliRunner()


@pytest.mark.parametrize("size", [100, 44, 1])
def test_a_wav_truncated_to_a_few_bytes_is_corrupt(tmp_path, size):
    path = tmp_path / "clip.wav"
    write_wav(path, 1.0, 22_050)
    path.write_bytes(path.read_bytes()[:size])
    with pytest.raises(MediaError) as e:
        spectrogram_of(path, AudioSpec(22_050, 3.0))
    assert e.value.reason == "corrupt audio"


def test_the_rule_is_one_stft_window_after_decoding(tmp_path):
    short, enough = tmp_path / "short.wav", tmp_path / "enough.wav"
    write_wav(short, (N_FFT - 1) / 22_050, 22_050)
    write_wav(enough, N_FFT / 22_050, 22_050)
    with pytest.raises(MediaError, match="shorter than one STFT window"):
        spectrogram_of(short, AudioSpec(22_050, 3.0))
    assert spectrogram_of(enough, AudioSpec(22_050, 3.0)).shape == AudioSpec(22_050, 3.0).shape


def test_prepare_strict_refuses_a_truncated_wav_and_lenient_skips_it(tmp_path):
    raw = make_crema_d(tmp_path / "CREMA-D", sample_rate=22_050, corrupt=False, bad_id=False)
    victim = raw.root / "AudioWAV" / f"{raw.ids[0]}.wav"
    victim.write_bytes(victim.read_bytes()[:100])
    args = ["prepare", "crema-d", "--source", str(raw.root), "--frame-size", "16"]
    strict = runner.invoke(app, [*args, "--out", str(tmp_path / "strict"), "--strict"])
    assert strict.exit_code == 3
    assert f"{raw.ids[0]}: corrupt audio" in strict.stderr
    assert not (tmp_path / "strict" / "manifest.json").exists()
    lenient = runner.invoke(app, [*args, "--out", str(tmp_path / "lenient"), "--json"])
    assert lenient.exit_code == 0, lenient.stderr
    assert '"corrupt audio": 1' in lenient.stdout


PARENT = """
import sys, time
from igm_cli.data.clips import run_pool
from tests.data.slow_worker import nap

for i, pid in run_pool(nap, [(60,)] * 4, 2):
    pass
"""


def test_prepare_workers_die_with_their_parent(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    pids_file = tmp_path / "pids"
    env["IGM_TEST_PIDS"] = str(pids_file)
    parent = subprocess.Popen([sys.executable, "-c", PARENT], env=env)
    deadline = time.time() + 60
    while time.time() < deadline and len(_pids(pids_file)) < 2:
        time.sleep(0.1)
    workers = _pids(pids_file)
    assert len(workers) == 2, "the workers did not start"
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 15
    while time.time() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.1)
    alive = [p for p in workers if _alive(p)]
    for p in alive:
        os.kill(p, signal.SIGKILL)
    assert not alive, "workers outlived their parent"


def _pids(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_full_disk_during_prepare_names_the_file_and_leaves_no_finished_output(tmp_path, monkeypatch):
    import numpy as np

    from igm_cli.data import manifest

    real, calls = np.save, []

    def short_write(path, array, **kwargs):  # what numpy raises when the disk fills mid-write
        calls.append(path)
        if len(calls) == 3:
            raise OSError("91200 requested and 48096 written")
        real(path, array, **kwargs)

    monkeypatch.setattr(manifest.np, "save", short_write)
    result = runner.invoke(app, ["prepare", "mfeat", "--out", str(tmp_path / "mf")])
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in result.stderr
    assert f"cannot write {calls[2]}" in line and "disk full" in line
    assert not (tmp_path / "mf").exists()  # nothing a later train takes for prepared data
    monkeypatch.setattr(manifest.np, "save", real)
    assert runner.invoke(app, ["prepare", "mfeat", "--out", str(tmp_path / "mf")]).exit_code == 0
