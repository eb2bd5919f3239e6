#!/usr/bin/env bash
# Make sure ffmpeg with libx265 is on PATH (the x265 anchor of `featcodec eval rd` needs it).
# Installs Debian's package where it is missing and apt-get is usable (as root or via sudo).
# Never fails the caller: without ffmpeg the x265 anchor is skipped with a clear message.
set -u
has_x265() { ffmpeg -hide_banner -encoders 2>/dev/null | grep -q libx265; }
if command -v ffmpeg >/dev/null 2>&1 && has_x265; then
    exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO="none"; fi
    if [ "$SUDO" != none ]; then
        echo "installing ffmpeg with apt-get (for the x265 anchor)..."
        $SUDO apt-get update -qq >/dev/null 2>&1
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null 2>&1
    fi
fi
if command -v ffmpeg >/dev/null 2>&1 && has_x265; then
    echo "ffmpeg: $(ffmpeg -hide_banner -version | head -n 1)"
else
    echo "WARNING: ffmpeg with libx265 is not available and could not be installed" \
         "(Debian: sudo apt-get install ffmpeg); the x265 anchor will be skipped." >&2
fi
exit 0
