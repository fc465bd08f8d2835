"""audio.py and video.py against independent computations; the frame-sampling rule; hold-out splits."""

import librosa
import numpy as np
import pytest
import torch

from igm_cli.data.audio import AudioSpec, fit_length, load_mono, log_spectrogram, spectrogram_of
from igm_cli.data.base import MediaError
from igm_cli.data.splits import group_holdout, holdout_size, stratified_holdout
from igm_cli.data.video import VideoSpec, sample_indices, sampled_frames
from tests.raw_factories import frame_value, write_garbage, write_video, write_wav


def numpy_log_stft(y: np.ndarray, n_fft: int = 512, hop: int = 353) -> np.ndarray:
    """Centred STFT with zero padding and a periodic Hann window, by hand with numpy's FFT."""
    padded = np.pad(y.astype(np.float64), n_fft // 2)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = np.stack([padded[t * hop : t * hop + n_fft] * window for t in range(1 + len(y) // hop)])
    return np.log(np.abs(np.fft.rfft(frames, axis=1)).T + 1e-7)


def test_spectrogram_matches_numpy_and_torch(tmp_path):
    samples = write_wav(tmp_path / "a.wav", 1.3, sample_rate=22_050, freq=700.0)  # no resampling
    spec = AudioSpec(22_050, 3.0)
    S = spectrogram_of(tmp_path / "a.wav", spec)
    assert S.shape == (257, 188) == spec.shape and S.dtype == np.float32
    tiled = np.tile(samples, 3)[:66_150]
    np.testing.assert_allclose(S, numpy_log_stft(tiled), atol=2e-3)
    window = torch.hann_window(512, dtype=torch.float64)
    Z = torch.stft(torch.from_numpy(tiled.astype(np.float64)), 512, 353, window=window, center=True,
                   pad_mode="constant", return_complex=True)  # fmt: skip
    loud = S > -5  # where |S| is far above the 1e-7 floor the match is tight
    np.testing.assert_allclose(S[loud], np.log(Z.abs().numpy() + 1e-7)[loud], atol=1e-4)
    assert np.argmax(S[:, 50]) == round(700 / 22_050 * 512)


def test_kinetics_shape_and_clipping():
    assert AudioSpec(35_400, 10.0).shape == (257, 1003)
    y = fit_length(np.array([0.5, 2.0, -3.0], np.float32), 7)
    np.testing.assert_array_equal(y, [0.5, 1.0, -1.0, 0.5, 1.0, -1.0, 0.5])
    with pytest.raises(MediaError, match="corrupt audio"):
        fit_length(np.zeros(0, np.float32), 7)
    assert log_spectrogram(np.zeros(354_000, np.float32)).min() == pytest.approx(np.log(1e-7))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # librosa.load imports audioread
def test_load_mono_is_librosa_load_and_reads_video_containers(tmp_path):
    write_wav(tmp_path / "a.wav", 0.5, sample_rate=16_000)
    expected, _ = librosa.load(tmp_path / "a.wav", sr=22_050, mono=True)
    np.testing.assert_array_equal(load_mono(tmp_path / "a.wav", 22_050), expected)
    write_video(tmp_path / "c.mp4", frames=10, container="mp4", codec="libx264", audio_seconds=1.0)
    y = load_mono(tmp_path / "c.mp4", 35_400)
    assert abs(len(y) - 35_400) < 3000  # AAC pads up to whole frames
    S = log_spectrogram(fit_length(y, 354_000))
    assert abs(int(np.argmax(S[:, 20])) - 1000 / 35_400 * 512) <= 1  # the 1 kHz tone


def test_undecodable_media_are_media_errors(tmp_path):
    write_garbage(tmp_path / "bad.wav")
    write_garbage(tmp_path / "bad.flv")
    write_video(tmp_path / "silent.mp4", frames=5, container="mp4", codec="libx264")
    with pytest.raises(MediaError, match="corrupt audio"):
        load_mono(tmp_path / "bad.wav", 22_050)
    with pytest.raises(MediaError, match="corrupt video"):
        sampled_frames(tmp_path / "bad.flv", VideoSpec(1))
    with pytest.raises(MediaError, match="missing audio"):
        load_mono(tmp_path / "silent.mp4", 22_050)


def test_sample_indices_rule():
    assert sample_indices(3, 1).tolist() == [1]
    assert sample_indices(10, 3).tolist() == [1, 5, 8]
    assert sample_indices(5, 3).tolist() == [0, 2, 4]
    for n in range(1, 40):
        for f in range(1, n + 1):
            idx = sample_indices(n, f)
            assert idx.tolist() == sorted(set(idx.tolist())) and idx[0] >= 0 and idx[-1] < n


@pytest.mark.parametrize(
    ("container", "codec", "fps", "count"),
    [("flv", "flv", 10, 25), ("flv", "libx264", 10, 25), ("mp4", "libx264", 5, 23), ("mp4", "mpeg4", 10, 45)],
)
def test_frames_follow_the_one_fps_rule(tmp_path, container, codec, fps, count):
    path = tmp_path / f"v.{container}"
    write_video(path, frames=count, fps=fps, size=(40, 30), container=container, codec=codec)
    n = -(-count // fps)  # 1-fps frames: source frames 0, fps, 2·fps, ...
    frames = sampled_frames(path, VideoSpec(n, size=16))
    assert frames.shape == (n, 3, 16, 16) and frames.dtype == np.uint8
    sources = [k * fps for k in range(n)]
    np.testing.assert_allclose(frames.mean(axis=(1, 2, 3)), [frame_value(i) for i in sources], atol=3)
    one = sampled_frames(path, VideoSpec(1, size=8))
    assert abs(one.mean() - frame_value(sources[n // 2])) <= 3  # F = 1: the centre 1-fps frame
    with pytest.raises(MediaError, match="too few frames"):
        sampled_frames(path, VideoSpec(n, min_frames=n + 1))


def test_stratified_holdout_is_exact_proportional_and_seeded():
    labels = np.repeat(np.arange(6), [300, 250, 200, 150, 100, 7])
    rest, held = stratified_holdout(labels, 100, seed=3)
    assert len(held) == 100 and len(rest) == len(labels) - 100
    assert not set(rest) & set(held) and sorted([*rest, *held]) == list(range(len(labels)))
    counts = np.bincount(labels[held], minlength=6)
    assert np.all(np.abs(counts - np.bincount(labels) * 100 / len(labels)) < 1)
    assert np.array_equal(held, stratified_holdout(labels, 100, seed=3)[1])
    assert not np.array_equal(held, stratified_holdout(labels, 100, seed=4)[1])
    assert len(stratified_holdout(labels[:12], 2, seed=0)[1]) == 2  # fewer than the classes
    assert holdout_size(7442, 744 / 7442) == 744 and holdout_size(9, 0.01) == 1 and holdout_size(1, 0.5) == 0


def test_group_holdout_keeps_groups_whole():
    groups = np.repeat(np.array(["1001", "1002", "1003", "1004"]), 5)
    rest, held, chosen = group_holdout(groups, 2, seed=0)
    assert len(chosen) == 2 and set(groups[held]) == set(chosen)
    assert not set(groups[rest]) & set(chosen)
