set -u
O2=$OUT/e2e; mkdir -p $O2
OUT=$O2 bash tools/gpu/e2e/e2e.sh prepare > $O2/prepare.txt 2>&1; tail -1 $O2/prepare.txt
source .ortgpu/unpack.sh
M=/tmp/mixattn-e2e/app/mixattn; w=/tmp/mixattn-e2e
summ() { python3 -c "
import json,sys
d=json.load(open(sys.argv[1]))
for r in d['results']: print(r['model'].split('/')[-2], 'median_ms', round(r['decode_ms_per_step'],3), 'rounds', [round(x,3) for x in r['decode_ms_per_step_rounds']], 'speedup', round(r['speedup'],3), 'prefill', round(r['prefill_tokens_per_second']))
" $1; }
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,temperature.gpu,temperature.memory,power.draw,clocks_event_reasons.active --format=csv -lms 250 > $O2/clocks.csv &
smi=$!
echo "cai alone $(date -u +%T)"
timeout 200 $M bench $w/cai/model.onnx --device cuda --context 32768 --batch 16 --steps 64 --rounds 9 --prefill-chunk 256 --budget-gib 64 --cuda-graph --device-logits --json > $O2/cai-alone.json 2> $O2/cai-alone.err; summ $O2/cai-alone.json
echo "gqa-full + cai $(date -u +%T)"
timeout 300 $M bench $w/gqa-full/model.onnx $w/cai/model.onnx --device cuda --context 32768 --batch 16 --steps 64 --rounds 9 --prefill-chunk 256 --budget-gib 64 --cuda-graph --device-logits --json > $O2/pair.json 2> $O2/pair.err; summ $O2/pair.json
echo "end $(date -u +%T)"
kill $smi
python3 - $O2/clocks.csv <<'PY'
import csv,sys
rows=list(csv.reader(open(sys.argv[1])))[1:]
# print a compressed trace: every 8th sample
for r in rows[::8]: print(','.join(x.strip() for x in r))
PY
