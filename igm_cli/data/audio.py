"""Audio → log-magnitude spectrogram, as the IGM reference prepares CREMA-D and Kinetics-Sounds.

Mono at a fixed rate, tiled to at least N seconds and cut to exactly N, clipped to [-1, 1],
STFT (n_fft 512, hop 353, periodic Hann, centred, zero padding), log(|S| + 1e-7).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import MediaError

N_FFT = 512
HOP = 353
LOG_EPS = 1e-7
RESAMPLER = "soxr_hq"  # librosa.load's default res_type
MIN_SAMPLES = N_FFT
"""Fewer decoded samples (at the target rate) than one STFT window is a corrupt file, not a clip:
a WAV cut to 100 bytes holds 28 samples, which tiling would repeat into seconds of noise."""
SOUNDFILE_SUFFIXES = {".wav", ".flac", ".ogg", ".aiff", ".aif"}


@dataclass(frozen=True)
class AudioSpec:
    """Sample rate and length of the waveform a spectrogram is computed from."""

    sample_rate: int
    seconds: float

    @property
    def samples(self) -> int:
        """Waveform length L after tiling and cutting."""
        return round(self.sample_rate * self.seconds)

    @property
    def shape(self) -> tuple[int, int]:
        """(frequency bins, frames) of the spectrogram: (257, 1 + L // hop)."""
        return N_FFT // 2 + 1, 1 + self.samples // HOP

    def record(self) -> dict[str, object]:
        """Every parameter, for manifest.preprocessing."""
        return {
            "sample_rate": self.sample_rate,
            "seconds": self.seconds,
            "samples": self.samples,
            "mono": "mean of the channels (librosa.to_mono)",
            "resample": f"librosa.resample res_type={RESAMPLER}",
            "length": "tiled until >= samples, then the first `samples` kept",
            "clip": [-1.0, 1.0],
            "stft": {"n_fft": N_FFT, "hop_length": HOP, "window": "hann (periodic)", "center": True},
            "pad_mode": "constant",
            "log": f"log(|S| + {LOG_EPS})",
            "log_eps": LOG_EPS,
            "shape": list(self.shape),
            "dtype": "float32",
        }


def _read_soundfile(path: Path) -> tuple[np.ndarray, int]:
    import soundfile

    data, rate = soundfile.read(path, dtype="float32", always_2d=True)  # (N, C)
    return data.T, rate


def _read_container(path: Path) -> tuple[np.ndarray, int]:
    """All audio of a video container (first audio stream) as float32 (C, N)."""
    import av

    try:
        return _decode_audio_stream(av, path)
    except av.FFmpegError as e:
        raise MediaError("corrupt audio", f"{path.name}: {e}") from None


def _decode_audio_stream(av, path: Path) -> tuple[np.ndarray, int]:
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise MediaError("missing audio", f"{path.name} has no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp")  # sample format only; rate and layout kept
        chunks = [out.to_ndarray() for frame in container.decode(stream) for out in resampler.resample(frame)]
        rate = stream.codec_context.sample_rate
    if not chunks:
        raise MediaError("corrupt audio", f"{path.name}: no audio decoded")
    return np.concatenate(chunks, axis=1), rate


def load_mono(path: Path, sample_rate: int) -> np.ndarray:
    """Mono float32 waveform at `sample_rate`: what librosa.load(path, sr=sample_rate) returns.

    Audio files are read with soundfile and video containers with PyAV (never audioread).
    """
    import librosa

    path = Path(path)
    reader = _read_soundfile if path.suffix.lower() in SOUNDFILE_SUFFIXES else _read_container
    try:
        channels, rate = reader(path)
        y = librosa.to_mono(channels)
        return librosa.resample(y, orig_sr=rate, target_sr=sample_rate, res_type=RESAMPLER)
    except MediaError:
        raise
    except (OSError, RuntimeError, ValueError, EOFError) as e:  # soundfile, FFmpeg and soxr errors
        raise MediaError("corrupt audio", f"{path.name}: {_first_line(e)}") from None


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def fit_length(y: np.ndarray, samples: int) -> np.ndarray:
    """Tile `y` until it has at least `samples` samples, keep the first `samples`, clip to [-1, 1]."""
    if y.size == 0:
        raise MediaError("corrupt audio", "no samples")
    reps = -(-samples // y.size)
    return np.clip(np.tile(y, reps)[:samples], -1.0, 1.0)


def log_spectrogram(y: np.ndarray) -> np.ndarray:
    """log(|STFT| + 1e-7) of a mono waveform, float32 (257, 1 + len(y) // 353)."""
    import librosa

    S = librosa.stft(y, n_fft=N_FFT, hop_length=HOP, window="hann", center=True, pad_mode="constant")
    return np.log(np.abs(S) + LOG_EPS).astype(np.float32)


def spectrogram_of(path: Path, spec: AudioSpec) -> np.ndarray:
    """The prepared audio of one file: float32 `spec.shape` (too short to be audio: MediaError)."""
    y = load_mono(path, spec.sample_rate)
    if y.size < MIN_SAMPLES:
        raise MediaError(
            "corrupt audio",
            f"{Path(path).name}: {y.size} samples after decoding, shorter than one STFT window "
            f"({MIN_SAMPLES} at {spec.sample_rate} Hz)",
        )
    return log_spectrogram(fit_length(y, spec.samples))
