#!/usr/bin/env bash
# Private inference across processes under emulated networks (issue #5).
#
#   scripts/netem.sh OUT_DIR LABEL MODEL
#
# MODEL is `preset:NAME` (random weights, as `kd bench private --preset NAME`) or a model
# directory. For one model this
#   1. shares it (`kd share`, bundles in $WORK, never in the repository),
#   2. runs the in-process executor at the same length (`kd bench private`) -> embedded.json,
#   3. for each profile in $PROFILES starts P0, P1 and the dealer as separate processes and runs
#      the client (`kd query`): one warm-up query (session set-up), then $QUERIES timed ones
#      -> PROFILE.json (per-query wall time as the client sees it, rounds/bytes metered by the
#      parties) and the parties' logs.
#
# Profiles: loopback (all roles on 127.0.0.1 in this namespace); lan (3 Gbps, 0.8 ms RTT) and
# wan (200 Mbps, 40 ms RTT): P0, P1, the dealer and the client each in their own network
# namespace, joined by veth pairs. The party-to-party link and both client links are shaped;
# the dealer's links are not (the cost model counts dealer traffic as offline).
# Shaping: `tc qdisc ... netem delay RTT/2 rate R` on both ends of each shaped veth when the
# kernel has sch_netem; otherwise (this machine's kernel is built without it) a user-space delay
# line (examples/delay_relay.rs: one-way delay + serialisation at R, per direction) relays each
# shaped link inside the receiving party's namespace.
#
# Needs root and iproute2. Environment: KD (binary), RELAY (delay line binary), WORK (scratch),
# PROFILES ("loopback lan wan"), QUERIES (3), SEQ (128), IO_TIMEOUT (seconds, 300), THREADS, TEXT,
# REUSE=1 (keep the shares and embedded.json of an earlier run of the same LABEL).
set -euo pipefail

OUT=${1:?usage: scripts/netem.sh OUT_DIR LABEL MODEL}
LABEL=${2:?label}
MODEL=${3:?model: preset:NAME or a directory}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
KD=${KD:-$ROOT/target/release/kd}
RELAY=${RELAY:-$ROOT/target/release/examples/delay_relay}
WORK=${WORK:-/tmp/kd-netem}
PROFILES=${PROFILES:-loopback lan wan}
QUERIES=${QUERIES:-3}
SEQ=${SEQ:-128}
IO_TIMEOUT=${IO_TIMEOUT:-300}
# Worker threads per role process (kd --threads). All roles share this machine's cores, so one
# each (on separate machines every role has its own); several rayon pools of all cores on the
# same 2 cores made each query ~2x slower here. Empty: all cores per process.
THREADS=${THREADS-1}
ASSETS=${KD_ASSETS:-$ROOT/../shared}
# Long enough for 128 word pieces after truncation (costs depend only on the length).
TEXT=${TEXT:-"the film opens slowly and builds a quiet tension through its first hour, then surprises everyone with a warm, funny and genuinely moving final act. the performances are subtle, the photography is beautiful, and the score never tells you what to feel. some viewers will find the middle section too long, and a subplot about the brother goes nowhere, but the ending earns every tear. it is the rare drama that trusts its audience, rewards patience, and stays with you for days. bring tissues, bring friends, and do not check your phone: small gestures matter here, and you will want to catch every one of them before the lights come up again."}

OUT=$(mkdir -p "$OUT/$LABEL" && cd "$OUT/$LABEL" && pwd)
W="$WORK/$LABEL"
mkdir -p "$W"
PIDS=()
NS=(kdp0 kdp1 kddl kdcl)

cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for n in "${NS[@]}"; do ip netns del "$n" 2>/dev/null || true; done
  PIDS=()
}
trap cleanup EXIT

# --- 1. shares, certificates, embedded baseline -------------------------------------------
if [ "${REUSE:-0}" = 1 ] && [ -f "$W/shares/p0/share.kdshare" ]; then
  echo "reusing $W/shares and $OUT/embedded.json" >&2
elif [[ $MODEL == preset:* ]]; then
  NAME=${MODEL#preset:}
  "$KD" share --preset "$NAME" --tokenizer "$ASSETS/models/all-MiniLM-L6-v2" --out "$W/shares" | tee "$OUT/share.txt"
  "$KD" bench private --preset "$NAME" --seq-len "$SEQ" --out "$OUT/embedded.json" > /dev/null
else
  "$KD" share --model "$MODEL" --out "$W/shares" | tee "$OUT/share.txt"
  "$KD" bench private --model "$MODEL" --seq-len "$SEQ" --out "$OUT/embedded.json" > /dev/null
fi
"$KD" certs --out "$W/certs" > /dev/null

have_netem() {
  ip netns add kdnetemprobe && ip -n kdnetemprobe link add kdpa type veth peer name kdpb
  local ok=1
  ip netns exec kdnetemprobe tc qdisc add dev kdpa root netem delay 1ms 2>/dev/null && ok=0
  ip netns del kdnetemprobe
  return $ok
}

# veth pair A:IFA(IPA) <-> B:IFB(IPB), /30
veth() {
  ip link add "$2" netns "$1" type veth peer name "$5" netns "$4"
  ip -n "$1" addr add "$3/30" dev "$2"; ip -n "$4" addr add "$6/30" dev "$5"
  ip -n "$1" link set "$2" up; ip -n "$4" link set "$5" up
}

shape() { # ns dev half_ms rate_mbit
  ip netns exec "$1" tc qdisc add dev "$2" root netem delay "${3}ms" rate "${4}mbit" limit 1000000
}

config() { # file role listen bundle p0 p1
  local f=$1 role=$2
  {
    [ -n "$3" ] && echo "listen = \"$3\""
    [ -n "$4" ] && echo "bundle = \"$4\""
    printf '[tls]\ncert = "%s"\nkey = "%s"\nca = "%s"\n' "$W/certs/$role.pem" "$W/certs/$role.key" "$W/certs/ca.pem"
    echo "[peers]"
    [ -n "$5" ] && echo "p0 = \"$5\""
    [ -n "$6" ] && echo "p1 = \"$6\""
    printf '[timeouts]\nio = %s\nquery = %s\n' "$IO_TIMEOUT" "$((IO_TIMEOUT * 4))"
  } > "$f"
}

run_in() { # ns (or "-") log cmd...
  local ns=$1 log=$2; shift 2
  if [ "$ns" = "-" ]; then "$@" > "$log" 2>&1 & else ip netns exec "$ns" "$@" > "$log" 2>&1 & fi
  PIDS+=($!)
}

wait_log() { # file needle: until the file mentions it (60 s at most)
  for _ in $(seq 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "$1 never said '$2'" >&2; cat "$1" >&2; return 1
}

# --- 2. one profile ------------------------------------------------------------------------
profile() {
  local prof=$1 half rate dir="$OUT/$1" c="$W/$1"
  mkdir -p "$dir" "$c"
  case $prof in
    lan) half=0.4; rate=3000 ;;
    wan) half=20; rate=200 ;;
    loopback) ;;
    *) echo "unknown profile $prof" >&2; exit 2 ;;
  esac
  local p0ns=- p1ns=- dns=- cns=- p0_for_p1 p0_for_c p1_for_c p0_for_d p1_for_d
  if [ "$prof" = loopback ]; then
    p0_for_p1=127.0.0.1:17300; p0_for_c=$p0_for_p1; p0_for_d=$p0_for_p1
    p1_for_c=127.0.0.1:17301; p1_for_d=$p1_for_c
    config "$c/p0.toml" p0 127.0.0.1:17300 "$W/shares/p0" "" ""
    config "$c/p1.toml" p1 127.0.0.1:17301 "$W/shares/p1" "$p0_for_p1" ""
    echo "shaping: none (loopback)" > "$dir/shaping.txt"
  else
    p0ns=kdp0; p1ns=kdp1; dns=kddl; cns=kdcl
    local netem=0
    have_netem && netem=1
    for n in "${NS[@]}"; do ip netns add "$n"; ip -n "$n" link set lo up; done
    veth kdp0 p0-p1 10.201.1.1 kdp1 p1-p0 10.201.1.2
    veth kdp0 p0-cl 10.201.2.1 kdcl cl-p0 10.201.2.2
    veth kdp1 p1-cl 10.201.3.1 kdcl cl-p1 10.201.3.2
    veth kdp0 p0-dl 10.201.4.1 kddl dl-p0 10.201.4.2
    veth kdp1 p1-dl 10.201.5.1 kddl dl-p1 10.201.5.2
    p0_for_d=10.201.4.1:7000; p1_for_d=10.201.5.1:7001
    if [ $netem = 1 ]; then
      shape kdp0 p0-p1 $half $rate; shape kdp1 p1-p0 $half $rate
      shape kdp0 p0-cl $half $rate; shape kdcl cl-p0 $half $rate
      shape kdp1 p1-cl $half $rate; shape kdcl cl-p1 $half $rate
      p0_for_p1=10.201.1.1:7000; p0_for_c=10.201.2.1:7000; p1_for_c=10.201.3.1:7001
      echo "shaping: tc netem delay ${half}ms rate ${rate}mbit on both ends of p0-p1, p0-client, p1-client" > "$dir/shaping.txt"
    else
      # Delay lines in the receiving party's namespace, in front of its listener.
      run_in kdp0 "$dir/relay-p0p1.log" "$RELAY" --listen 10.201.1.1:7100 --to 127.0.0.1:7000 --delay-ms $half --rate-mbit $rate
      run_in kdp0 "$dir/relay-p0cl.log" "$RELAY" --listen 10.201.2.1:7200 --to 127.0.0.1:7000 --delay-ms $half --rate-mbit $rate
      run_in kdp1 "$dir/relay-p1cl.log" "$RELAY" --listen 10.201.3.1:7201 --to 127.0.0.1:7001 --delay-ms $half --rate-mbit $rate
      p0_for_p1=10.201.1.1:7100; p0_for_c=10.201.2.1:7200; p1_for_c=10.201.3.1:7201
      echo "shaping: user-space delay line (no sch_netem in this kernel): one-way ${half} ms, ${rate} Mbit/s per direction on p0-p1, p0-client, p1-client" > "$dir/shaping.txt"
    fi
    config "$c/p0.toml" p0 0.0.0.0:7000 "$W/shares/p0" "" ""
    config "$c/p1.toml" p1 0.0.0.0:7001 "$W/shares/p1" "$p0_for_p1" ""
  fi
  config "$c/dealer.toml" dealer "" "" "$p0_for_d" "$p1_for_d"
  config "$c/client.toml" client "" "$W/shares/public" "$p0_for_c" "$p1_for_c"
  local t=()
  [ -n "$THREADS" ] && t=(--threads "$THREADS")
  run_in $p0ns "$dir/p0.log" "$KD" "${t[@]}" party --role p0 --config "$c/p0.toml"
  run_in $p1ns "$dir/p1.log" "$KD" "${t[@]}" party --role p1 --config "$c/p1.toml"
  run_in $dns "$dir/dealer.log" "$KD" "${t[@]}" party --role dealer --config "$c/dealer.toml"
  wait_log "$dir/p0.log" listening; wait_log "$dir/p1.log" listening
  local q=("$KD" query --config "$c/client.toml" --text "$TEXT" --max-seq-len "$SEQ")
  if [ "$cns" = "-" ]; then Q=("${q[@]}"); else Q=(ip netns exec "$cns" "${q[@]}"); fi
  # Warm-up: waits in P0's queue while the session prepares the weights.
  "${Q[@]}" --output "$dir/warmup.json" > /dev/null 2>> "$dir/client.log"
  "${Q[@]}" --repeat "$QUERIES" --output "$OUT/$prof.json" > /dev/null 2>> "$dir/client.log"
  cleanup
}

for p in $PROFILES; do
  echo "== $LABEL: $p" >&2
  profile "$p"
done
echo "results in $OUT" >&2
