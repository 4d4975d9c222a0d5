# Sourced by the GPU-machine scripts: the machine's own PyTorch libraries (CUDA), the peer's wheels,
# and NCCL without NVLink multicast.
export LD_LIBRARY_PATH=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
# The release binary travels xz-compressed (the working tree that travels is limited to 64 MiB).
if [ -f .gpu/wanlora.xz ]; then xz -dc .gpu/wanlora.xz > /tmp/wanlora && chmod +x /tmp/wanlora; fi
WANLORA=${WANLORA:-/tmp/wanlora}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
# A static ffmpeg/ffprobe carried in .gpu/ffmpeg (the GPU machine has none; no WebP encoder in it).
if ! command -v ffprobe >/dev/null 2>&1 && [ -f .gpu/ffmpeg/ffprobe-linux-x64.xz ]; then
  mkdir -p /tmp/ffbin
  for t in ffmpeg ffprobe; do xz -dc ".gpu/ffmpeg/$t-linux-x64.xz" > "/tmp/ffbin/$t" && chmod +x "/tmp/ffbin/$t"; done
  export PATH="/tmp/ffbin:$PATH"
fi
# Clips for the dataset benchmarks: N clips of moving test patterns, by default 5 s of 768×512 at
# 24 fps (`make_clips DIR N [WxH] [SECONDS] [FPS]`).
make_clips() {
  local dir=$1 n=$2 size=${3:-768x512} seconds=${4:-5} rate=${5:-24}
  mkdir -p "$dir"
  for i in $(seq 1 "$n"); do
    [ -f "$dir/clip_$i.mp4" ] && continue
    ffmpeg -nostdin -v error -f lavfi -i "testsrc2=size=$size:rate=$rate,hue=h=$((i * 17))" -t "$seconds" \
      -c:v libx264 -preset veryfast -pix_fmt yuv420p "$dir/clip_$i.mp4"
    echo "zkw a test pattern drifts across the frame, variant $i" > "$dir/clip_$i.txt"
  done
}
