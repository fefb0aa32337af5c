#!/usr/bin/env bash
# The GPU runs behind docs/benchmarks.md: benchmarks/speed.py on CUDA, Fastflow2D beside anomalib's Fastflow in
# each run, first eager fp32, then compiled (CUDA graphs) in bf16 and fp32, then wide_resnet50_2 while time is left.
#
# Usage: bash benchmarks/gpu_suite.sh OUTPUT_FOLDER [SECONDS]   (JSON and log of every run land in OUTPUT_FOLDER)
set -u
out=${1:?give an output folder}
deadline=$((SECONDS + ${2:-560}))
python=${PYTHON:-python3}
mkdir -p "$out"
"$python" -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"

run() {
    local name=$1 limit=$2
    shift 2
    local left=$((deadline - SECONDS))
    if ((left < 30)); then
        echo "$name: skipped, ${left} s left"
        return
    fi
    ((limit > left)) && limit=$left
    local start=$SECONDS
    timeout "$limit" "$python" benchmarks/speed.py --device cuda --no-openvino --repeats 20 \
        --output "$out/$name.json" "$@" >"$out/$name.log" 2>&1
    echo "$name: exit $? after $((SECONDS - start)) s"
    grep '^|' "$out/$name.log"
}

compiled=(--fastflow2d-arg compile_mode=reduce-overhead)
run resnet18-eager-fp32 120
run resnet18-compiled-bf16 220 --precision bf16-mixed "${compiled[@]}"
run resnet18-compiled-fp32 200 "${compiled[@]}"
run wide_resnet50_2-eager-fp32 120 --backbone wide_resnet50_2
