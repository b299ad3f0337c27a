# The GPU check as one script for a machine with a CUDA device and no network (docs/benchmarks_embed.md, "CUDA").
# Run from the repo root: `bash benchmarks/gpu_session.sh`, with $OUT set to a folder for the logs.
# It expects (both git-ignored, prepared beforehand on a machine with PyPI, see the doc):
#   .whl/  wheels of the packages the machine's own Python lacks (the project's pins do not apply there);
#   .gpu/brain-mri-2800/  a brain-mri subset with its labels.csv.
# Each section has its own time limit (T2, T3); the watchdog prints every thread's stack if gpu_check hangs.
set -u
PY=${PY:-python3}
DEV=${DEV:-cuda}
if [ -z "${SKIP_INSTALL:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 2
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee $OUT/smi.txt
$PY -c "import recommender.ingest, qdrant_edge, qdrant_client, open_clip, umap, cli.main, torch; print('imports ok', torch.__version__, torch.cuda.is_available())" 2>&1 | tee $OUT/imports.log
if [ -z "${SKIP_CLI:-}" ]; then
echo "== 1. CLI on the GPU: ingest the sample corpus, similar by image; CLIP checkpoint ingest + text query"
export RECOMMENDER_HOME=/tmp/rh
/usr/bin/time -v timeout 150 $PY -m cli.main ingest samples/art --json > $OUT/cli_ingest.json 2> $OUT/cli_ingest.err; echo "ingest rc $?"
grep -E "Elapsed|Maximum resident" $OUT/cli_ingest.err; head -c 400 $OUT/cli_ingest.json; echo
timeout 90 $PY -m cli.main similar --image samples/art/genre/cl000000001.jpg -k 3 2>&1 | tail -8
$PY -c "import open_clip,torch; torch.save({'state_dict': open_clip.create_model('ViT-B-32').state_dict()}, '/tmp/vitb32.pt')" 2>/dev/null
export RECOMMENDER_HOME=/tmp/rh_clip RECOMMENDER_MODEL=clip:ViT-B-32:/tmp/vitb32.pt
timeout 150 $PY -m cli.main ingest samples/art --json > $OUT/cli_clip.json 2> $OUT/cli_clip.err; echo "clip ingest rc $?"; tail -3 $OUT/cli_clip.err; head -c 300 $OUT/cli_clip.json; echo
timeout 90 $PY -m cli.main recommend --text "a portrait" -k 3 2>&1 | tail -8
unset RECOMMENDER_HOME RECOMMENDER_MODEL
fi
echo "== 2. gpu_check"
timeout ${T2:-220} $PY benchmarks/gpu_check.py --device $DEV --corpus .gpu/brain-mri-2800 --watchdog $(( ${T2:-220} - 10 )) ${GC_ARGS:-} --json $OUT/gpu.json 2>&1 | grep -v "No pretrained" | tee $OUT/gpu.log
echo "== 3. ingest vs plain, same machine"
timeout ${T3:-240} $PY benchmarks/ingest_vs_plain.py .gpu/brain-mri-2800 ${IVP_ARGS:-} 2>&1 | tee $OUT/ivp.log
echo "== done"
