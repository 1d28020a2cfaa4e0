"""Video IO (aa/io/video.py): exact lossless round trips, partial reads by seeking, clear errors, atomic writes."""
import numpy as np
import pytest
from PIL import Image

from aa.io import video
from aa.io.video import VideoError, iter_video, read_frames_folder, read_image, read_video, video_info, write_video


def _noise(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _smooth(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    """Moving colour ramps: the kind of content lossy H.264 keeps well."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([np.stack([(3 * x + 5 * i) % 256, 4 * y % 256, np.full_like(x, 128)], -1)
                     for i in range(n)]).astype(np.uint8)


def test_lossless_round_trip_is_pixel_exact(tmp_path):
    """lossless=True (libx264rgb, qp 0) gives back every pixel of pure noise exactly, odd sizes included."""
    frames = _noise(12, 33, 47)
    write_video(tmp_path / "a.mp4", (f for f in frames), fps=8, lossless=True)  # a generator: frames stream
    assert np.array_equal(read_video(tmp_path / "a.mp4"), frames)


def test_lossy_round_trip_is_close_and_keeps_count_fps_size(tmp_path):
    """Default H.264 (crf 18, yuv420p) on smooth content: mean error under 3 levels; metadata survives."""
    frames = _smooth(10)
    write_video(tmp_path / "a.mp4", frames, fps=12.5)
    back = read_video(tmp_path / "a.mp4")
    assert back.shape == frames.shape and back.dtype == np.uint8
    assert np.array_equal(np.stack(list(iter_video(tmp_path / "a.mp4"))), back)  # streaming decode, same frames
    assert np.abs(back.astype(int) - frames).mean() < 3.0
    assert video_info(tmp_path / "a.mp4") == video.VideoInfo(frames=10, fps=12.5, width=64, height=48)


def test_seek_read_equals_full_decode(tmp_path, monkeypatch):
    """Reading a few frames (unsorted, repeated) seeks instead of decoding all, and matches the full decode.

    Scene cuts every 40 frames make x264 start new keyframes, so the seek really skips frames."""
    cuts = [_noise(1, 16, 16, seed=s)[0] for s in range(3)]
    frames = np.stack([np.roll(cuts[i // 40], i % 40, axis=1) for i in range(120)])
    write_video(tmp_path / "a.mp4", frames, fps=24)
    full = read_video(tmp_path / "a.mp4")
    wanted = [97, 3, 85, 85, 119]

    def no_full_decode(*args):
        raise AssertionError("read_video(indices) fell back to decoding the whole video")

    monkeypatch.setattr(video, "_decode_all", no_full_decode)
    assert np.array_equal(read_video(tmp_path / "a.mp4", wanted), full[wanted])
    with pytest.raises(VideoError, match="out of range"):
        read_video(tmp_path / "a.mp4", [0, 120])


def test_frame_count_without_container_index(tmp_path):
    """Matroska stores no frame count: video_info counts packets instead (no decoding)."""
    write_video(tmp_path / "a.mkv", _smooth(7), fps=8)
    assert video_info(tmp_path / "a.mkv").frames == 7
    assert len(read_video(tmp_path / "a.mkv")) == 7


def test_bad_files_raise_video_error(tmp_path):
    """Missing, empty, garbage and truncated files all raise VideoError naming the file, never a PyAV error."""
    write_video(tmp_path / "good.mp4", _smooth(10), fps=8)
    data = (tmp_path / "good.mp4").read_bytes()
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    (tmp_path / "head.mp4").write_bytes(data[:200])
    (tmp_path / "half.mp4").write_bytes(data[: len(data) // 2])
    for name in ("missing.mp4", "empty.mp4", "garbage.mp4", "head.mp4", "half.mp4"):
        with pytest.raises(VideoError, match=name):
            read_video(tmp_path / name)


def test_failed_write_leaves_nothing(tmp_path):
    """A frame source that fails midway leaves no partial file and no temp file; an old file stays untouched."""
    def frames():
        yield from _smooth(3)
        raise RuntimeError("camera unplugged")

    with pytest.raises(RuntimeError):
        write_video(tmp_path / "new.mp4", frames(), fps=8)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "old.mp4").write_bytes(b"previous")
    with pytest.raises(ValueError, match="even"):  # yuv420p needs even sizes
        write_video(tmp_path / "old.mp4", _noise(2, 33, 47), fps=8)
    assert [p.name for p in tmp_path.iterdir()] == ["old.mp4"]
    assert (tmp_path / "old.mp4").read_bytes() == b"previous"


def test_frames_folder_natural_order_and_modes(tmp_path):
    """Images load in natural order (2 before 10); grey is replicated, transparency composited over white;
    mismatched sizes and 16-bit images are errors naming the file."""
    Image.new("RGB", (4, 2), (10, 20, 30)).save(tmp_path / "f10.png")
    Image.new("L", (4, 2), 77).save(tmp_path / "f2.png")
    Image.new("RGBA", (4, 2), (0, 0, 0, 0)).save(tmp_path / "f3.png")
    (tmp_path / "notes.txt").write_text("ignored")
    frames = read_frames_folder(tmp_path)
    assert frames.shape == (3, 2, 4, 3)
    assert frames[:, 0, 0].tolist() == [[77, 77, 77], [255, 255, 255], [10, 20, 30]]
    assert np.array_equal(read_image(tmp_path / "f3.png"), frames[1])
    Image.new("RGB", (5, 2)).save(tmp_path / "f11.png")
    with pytest.raises(VideoError, match="f11.png"):
        read_frames_folder(tmp_path)
    Image.new("I;16", (4, 2)).save(tmp_path / "deep.png")
    with pytest.raises(VideoError, match="deep.png"):  # 16-bit images are refused, not silently clipped
        read_image(tmp_path / "deep.png")


def test_raw_clip_round_trips_and_reads_like_a_video(tmp_path):
    """A .npz path is a raw clip: exact frames, fps and size back, partial reads (unsorted, repeated) and streaming
    as for a video, the same out-of-range error, and no PyAV anywhere on the way (it is replaced by None here)."""
    frames = _noise(9, 33, 47)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(video, "av", None)
        write_video(tmp_path / "a.npz", (f for f in frames), fps=12.5)
        assert np.array_equal(read_video(tmp_path / "a.npz"), frames)
        assert np.array_equal(read_video(tmp_path / "a.npz", [8, 0, 8]), frames[[8, 0, 8]])
        assert read_video(tmp_path / "a.npz", []).shape == (0, 33, 47, 3)
        assert np.array_equal(np.stack(list(iter_video(tmp_path / "a.npz"))), frames)
        assert video_info(tmp_path / "a.npz") == video.VideoInfo(frames=9, fps=12.5, width=47, height=33)
        with pytest.raises(VideoError, match="out of range"):
            read_video(tmp_path / "a.npz", [9])
        (tmp_path / "b.mp4").write_bytes(b"x")
        with pytest.raises(VideoError, match="needs PyAV.*pip install av"):
            read_video(tmp_path / "b.mp4")


def test_bad_raw_clips_raise_video_error_and_failed_writes_leave_nothing(tmp_path):
    """Missing, garbage, truncated and wrongly shaped raw clips raise VideoError naming the file; a frame source
    that fails midway leaves neither a clip nor a temp file."""
    write_video(tmp_path / "good.npz", _noise(4, 8, 8), fps=8)
    data = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "garbage.npz").write_bytes(np.random.default_rng(0).bytes(4000))
    (tmp_path / "half.npz").write_bytes(data[: len(data) // 2])
    np.savez(tmp_path / "grey.npz", frames=np.zeros((4, 8, 8), np.uint8), fps=8.0)
    np.savez(tmp_path / "nofps.npz", frames=np.zeros((4, 8, 8, 3), np.uint8))
    np.savez(tmp_path / "twofps.npz", frames=np.zeros((4, 8, 8, 3), np.uint8), fps=[8.0, 8.0])
    for name in ("missing.npz", "garbage.npz", "half.npz", "grey.npz", "nofps.npz", "twofps.npz"):
        with pytest.raises(VideoError, match=name):
            video_info(tmp_path / name)

    def frames():
        yield from _noise(3, 8, 8)
        raise RuntimeError("camera unplugged")

    with pytest.raises(RuntimeError):
        write_video(tmp_path / "new.npz", frames(), fps=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["good.npz", "garbage.npz", "half.npz", "grey.npz", "nofps.npz", "twofps.npz"])
