"""Malformed media for the fuzz tests, made reproducibly from the real music in tests/data.

`malformed_media(folder, seed)` encodes short excerpts of the test music into the containers
users upload (WAV, FLAC, MP3, AAC, MP4, Ogg, Opus, MPEG-TS) and derives hundreds of hostile
files from them: truncations, flipped and random bytes, valid headers over garbage, other file
types, and headers that declare absurd lengths, sample rates, channel counts and formats. The
same seed gives the same bytes.
"""

from __future__ import annotations

import struct
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MUSIC_DIR = Path(__file__).parent / "data" / "music"

#: name -> (suffix, ffmpeg output arguments) of the base files.
_BASES: dict[str, tuple[str, list[str]]] = {
    "wav": (".wav", ["-ar", "22050", "-ac", "1", "-c:a", "pcm_s16le"]),
    "flac": (".flac", ["-ar", "44100", "-ac", "2", "-c:a", "flac"]),
    "mp3": (".mp3", ["-ar", "44100", "-ac", "2", "-c:a", "libmp3lame", "-b:a", "128k"]),
    "aac": (".aac", ["-ar", "44100", "-c:a", "aac", "-b:a", "96k", "-f", "adts"]),
    "m4a": (".m4a", ["-ar", "48000", "-c:a", "aac", "-b:a", "96k"]),
    "ogg": (".ogg", ["-ar", "22050", "-c:a", "libvorbis", "-q:a", "3"]),
    "opus": (".opus", ["-c:a", "libopus", "-b:a", "48k"]),
    "ts": (".ts", ["-ar", "48000", "-c:a", "aac", "-b:a", "96k", "-f", "mpegts"]),
}


@dataclass(frozen=True)
class MediaCase:
    name: str  # file name to upload under (its suffix is what a user would give)
    data: bytes


def base_files(folder: Path, length_s: float = 3.0) -> dict[str, bytes]:
    """Short excerpts of the test music, one per container (each from another recording)."""
    music = sorted(MUSIC_DIR.glob("*.ogg"))
    out = {}
    for i, (name, (suffix, args)) in enumerate(_BASES.items()):
        source = music[i % len(music)]
        path = folder / f"base_{name}{suffix}"
        if not path.exists():
            cmd = [
                "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
                "-ss", str(3 + i), "-t", str(length_s), "-i", str(source), "-vn",
                *args, "-fflags", "+bitexact", "-flags:a", "+bitexact", "-map_metadata", "-1",
                str(path),
            ]  # fmt: skip
            subprocess.run(cmd, check=True)
        out[name] = path.read_bytes()
    return out


def _wav(
    *,
    rate_hz: int = 22050,
    channels: int = 1,
    bits: int = 16,
    tag: int = 1,
    data: bytes = b"",
    data_size: int | None = None,
    riff_size: int | None = None,
    block_align: int | None = None,
) -> bytes:
    align = block_align if block_align is not None else (channels * bits // 8) & 0xFFFF
    byte_rate = (rate_hz * align) & 0xFFFFFFFF
    fmt = struct.pack("<HHIIHH", tag, channels, rate_hz & 0xFFFFFFFF, byte_rate, align, bits)
    size = len(data) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data"
    body += struct.pack("<I", size & 0xFFFFFFFF) + data
    riff = len(body) if riff_size is None else riff_size
    return b"RIFF" + struct.pack("<I", riff & 0xFFFFFFFF) + body


def _flac_with_streaminfo(flac: bytes, **fields: int) -> bytes:
    """`flac` with its STREAMINFO fields replaced (sample_rate, channels, bits, total)."""
    assert flac[:4] == b"fLaC"
    info = bytearray(flac[8:42])  # the 34-byte STREAMINFO body after the block header
    packed = int.from_bytes(info[10:18], "big")  # rate 20 | channels-1 3 | bits-1 5 | total 36
    rate = fields.get("sample_rate", packed >> 44)
    channels = fields.get("channels", ((packed >> 41) & 0x7) + 1)
    bits = fields.get("bits", ((packed >> 36) & 0x1F) + 1)
    total = fields.get("total", packed & ((1 << 36) - 1))
    packed = (
        ((rate & 0xFFFFF) << 44)
        | (((channels - 1) & 0x7) << 41)
        | (((bits - 1) & 0x1F) << 36)
        | (total & ((1 << 36) - 1))
    )
    info[10:18] = packed.to_bytes(8, "big")
    if "min_block" in fields:
        info[0:2] = struct.pack(">H", fields["min_block"])
        info[2:4] = struct.pack(">H", fields["min_block"])
    return flac[:8] + bytes(info) + flac[42:]


def _mp3_with_xing(mp3: bytes, frames: int, size_bytes: int) -> bytes:
    """An MP3 led by a Xing/Info frame that claims `frames` frames and `size_bytes` bytes."""
    start = 0
    if mp3[:3] == b"ID3":
        tag_size = 0
        for b in mp3[6:10]:
            tag_size = (tag_size << 7) | b
        start = 10 + tag_size
    header = mp3[start : start + 4]
    frame = bytearray(header + bytes(413))  # 128 kb/s at 44.1 kHz: 417 bytes
    offset = 4 + 32  # MPEG-1 stereo side information
    frame[offset : offset + 4] = b"Xing"
    frame[offset + 4 : offset + 8] = struct.pack(">I", 0x3)  # frames and bytes present
    frame[offset + 8 : offset + 16] = struct.pack(">II", frames, size_bytes)
    return mp3[:start] + bytes(frame) + mp3[start:]


def _png() -> bytes:
    raw = b"\x00" + b"\xff\x00\x00" * 4
    ihdr = struct.pack(">IIBBBBB", 4, 1, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def malformed_media(folder: Path, seed: int = 20) -> list[MediaCase]:
    """At least 200 hostile or damaged files, the same ones for the same `seed`."""
    rng = np.random.default_rng(seed)
    bases = base_files(folder)
    suffix = {name: s for name, (s, _) in _BASES.items()}
    cases: list[MediaCase] = []

    def add(name: str, data: bytes) -> None:
        cases.append(MediaCase(name, data))

    for kind, data in bases.items():
        ext = suffix[kind]
        n = len(data)
        # Truncations: inside the header, just after it, and at random points.
        cuts = sorted({1, 4, 12, 44, 100, 400, n // 3, n - 1, *rng.integers(2, n - 1, size=4)})
        for cut in cuts:
            add(f"trunc_{kind}_{cut}{ext}", data[:cut])
        # Flipped bits at random positions, from a few to many.
        for flips in (1, 8, 64, 512):
            damaged = bytearray(data)
            for pos in rng.integers(0, n, size=flips):
                damaged[pos] ^= 1 << int(rng.integers(0, 8))
            add(f"flip_{kind}_{flips}{ext}", bytes(damaged))
        # A block of random bytes over the middle, and over the start.
        for where in ("start", "middle"):
            damaged = bytearray(data)
            at = 0 if where == "start" else n // 2
            damaged[at : at + 2048] = rng.bytes(len(damaged[at : at + 2048]))
            add(f"random_{kind}_{where}{ext}", bytes(damaged))
        # A valid header (short and long) over garbage, and over zeros.
        for keep in (64, 1024):
            add(f"header_garbage_{kind}_{keep}{ext}", data[:keep] + rng.bytes(20_000))
        add(f"header_zeros_{kind}{ext}", data[:256] + bytes(20_000))
        # The bytes shuffled in 512-byte blocks, and the file twice over.
        blocks = [data[i : i + 512] for i in range(0, n, 512)]
        rng.shuffle(blocks)
        add(f"shuffled_{kind}{ext}", b"".join(blocks))
        add(f"doubled_{kind}{ext}", data + data)
        # Under another container's name, and with no suffix at all.
        other = ".mp3" if ext != ".mp3" else ".flac"
        add(f"misnamed_{kind}{other}", data)
        add(f"nosuffix_{kind}", data)

    # Other file types and degenerate bytes.
    add("image.png", _png())
    add("document.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer <<>>\n%%EOF\n")
    add("archive.zip", b"PK\x05\x06" + bytes(18))
    add("page.html.mp3", b"<!doctype html><html><body>not audio</body></html>")
    add("data.json.wav", b'{"not": "audio"}')
    add("program.mp3", b"\x7fELF\x02\x01\x01" + bytes(57) + rng.bytes(2000))
    add("one_byte.mp3", b"\xff")
    add("zeros_1k.wav", bytes(1024))
    add("zeros_100k.mp3", bytes(100_000))
    add("ones_50k.aac", b"\xff" * 50_000)
    add("random_64k.ts", rng.bytes(65_536))
    add("text.ogg", b"OggS" + b"hello " * 1000)
    add("sync_storm.mp3", b"\xff\xfb\x90\x00" * 5000)
    add("ts_sync_only.ts", (b"\x47" + bytes(187)) * 200)
    add("id3_only.mp3", b"ID3\x04\x00\x00\x00\x00\x00\x00")
    add("id3_huge.mp3", b"ID3\x04\x00\x00\x7f\x7f\x7f\x7f" + rng.bytes(4000))

    # WAV headers that lie: rates, channels, bits, format tags, sizes.
    pcm = bases["wav"][44 : 44 + 40_000]
    for rate in (0, 1, 2, 100, 1999, 2_000_000_000, 0xFFFFFFFF):
        add(f"wav_rate_{rate}.wav", _wav(rate_hz=rate, data=pcm))
    for channels in (0, 3, 64, 65535):
        add(f"wav_channels_{channels}.wav", _wav(channels=channels, data=pcm))
    for bits in (0, 1, 7, 13, 64, 65535):
        add(f"wav_bits_{bits}.wav", _wav(bits=bits, data=pcm))
    for tag in (0, 2, 3, 6, 0x1234, 0xFFFE, 0xFFFF):
        add(f"wav_tag_{tag:#06x}.wav", _wav(tag=tag, data=pcm))
    add("wav_data_size_max.wav", _wav(data=pcm, data_size=0xFFFFFFFF, riff_size=0xFFFFFFFF))
    add("wav_data_size_zero.wav", _wav(data=pcm, data_size=0))
    add("wav_block_align_zero.wav", _wav(data=pcm, block_align=0))
    add("wav_block_align_huge.wav", _wav(data=pcm, block_align=65535))
    add("wav_no_data.wav", _wav(data=b""))
    add("wav_1hz_40k.wav", _wav(rate_hz=1, data=rng.bytes(40_000)))

    # FLAC STREAMINFO that lies.
    flac = bases["flac"]
    for label, fields in {
        "total_max": {"total": (1 << 36) - 1},
        "rate_0": {"sample_rate": 0},
        "rate_1": {"sample_rate": 1},
        "rate_max": {"sample_rate": (1 << 20) - 1},
        "channels_8": {"channels": 8},
        "bits_32": {"bits": 32},
        "bits_4": {"bits": 4},
        "block_0": {"min_block": 0},
        "block_max": {"min_block": 65535},
    }.items():
        add(f"flac_{label}.flac", _flac_with_streaminfo(flac, **fields))

    # Damaged frame headers: MP3 frames that switch rate or channel mode mid-stream, MPEG-TS
    # packets whose headers (PIDs, continuity, adaptation fields) are corrupt.
    mp3 = bases["mp3"]
    syncs = [i for i in range(len(mp3) - 4) if mp3[i] == 0xFF and mp3[i + 1] & 0xE0 == 0xE0]
    for variant in range(6):
        damaged = bytearray(mp3)
        for pos in rng.choice(syncs, size=min(len(syncs), 20), replace=False):
            damaged[pos + 2 + int(rng.integers(0, 2))] ^= 1 << int(rng.integers(0, 8))
        add(f"mp3_frame_headers_{variant}.mp3", bytes(damaged))
    ts = bases["ts"]
    for variant in range(6):
        damaged = bytearray(ts)
        for packet in rng.choice(len(ts) // 188, size=30, replace=False):
            pos = int(packet) * 188 + int(rng.integers(1, 12))
            damaged[pos] ^= 1 << int(rng.integers(0, 8))
        add(f"ts_packet_headers_{variant}.ts", bytes(damaged))

    # MP3 whose Xing/Info frame declares absurd lengths.
    mp3 = bases["mp3"]
    for frames, size in ((0x7FFFFFFF, 0x7FFFFFFF), (0xFFFFFFFF, 1), (0, 0), (1, 0xFFFFFFFF)):
        add(f"mp3_xing_{frames:x}_{size:x}.mp3", _mp3_with_xing(mp3, frames, size))
    return cases
