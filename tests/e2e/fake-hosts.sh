#!/bin/bash
# launch/scale on two fake hosts (launch/fake-hosts): network namespaces joined by a bridge,
# each host's link shaped to 100 Mbit/s by tc tbf with 1 ms of one-way delay (nfq-delay).
# bench calibrate must see the shaped link (under 20 MB/s against the 1-2 GB/s of an
# unshaped veth; a round trip of at least 2 ms), the ranks must sit on two hosts, the report
# must name the network, and the namespaces and the processes that ran in them (delay
# daemons, orted, ranks) must be gone afterwards.
# Bad options are refused before anything is built.
. "$(dirname "$0")/common.sh"
[ "$(id -u)" = 0 ] || skip "needs root: network namespaces"
command -v gnuplot >/dev/null || skip "gnuplot missing (apt-get install gnuplot-nox)"
command -v iptables-legacy >/dev/null || command -v iptables >/dev/null || skip "iptables missing (launch/setup)"
pkg-config --exists libnetfilter_queue || skip "libnetfilter-queue-dev missing (launch/setup)"
ours() { ip netns list | grep -c '^fh[0-9]*\(h[0-9]*\|sw\)' || true; }
# what runs inside the hosts: the delay daemons and Open MPI's daemons and ranks name the
# helpers' directory or the fake subnet on their command lines
inside() { pgrep -fc '/tmp/fake-hosts\.|10\.77\.0\.' || true; }
before=$(ours) running=$(inside)
SHARDLM=$SHARDLM "$SLM_SRCDIR/launch/scale" --fake-hosts 2 --rate 100mbit --delay-ms 1 --no-isoflop --data synthetic \
    --out "$WORK/study" --steps 4 --batch 4 >"$WORK/scale.out" 2>&1 || { cat "$WORK/scale.out"; fail "launch/scale --fake-hosts"; }
cat "$WORK/scale.out"
"$PYTHON3" - "$WORK/study" <<'PY' || fail "the study on fake hosts"
import csv, json, sys
d = sys.argv[1]
cal = json.load(open(d + "/calibration.json"))
assert cal["ranks"] == 2 and cal["nodes"] == 2, cal
assert cal["bandwidth_bytes_per_s"] < 20e6 and cal["allreduce_bus_bytes_per_s"] < 20e6, cal
assert cal["latency_s"] >= 1e-3, cal       # half a round trip through two 1 ms delays
tp = list(csv.DictReader(open(d + "/throughput.csv")))
two = [r for r in tp if r["ranks"] == "2"]
assert len(two) == 2 and all(float(r["comm_mb_per_step"]) > 0 for r in two), tp
report = open(d + "/report.md").read()
assert "Network: 2 fake hosts (network namespaces), TCP over veth and a bridge, tbf 100mbit, one-way delay 1 ms" \
    in report, report[:600]
print("fake hosts: bandwidth %.1f MB/s, all-reduce bus %.1f MB/s, latency %.2f ms" % (
    cal["bandwidth_bytes_per_s"] / 1e6, cal["allreduce_bus_bytes_per_s"] / 1e6, cal["latency_s"] * 1e3))
PY
[ "$(ours)" = "$before" ] || { ip netns list; fail "namespaces left behind"; }
[ "$(inside)" = "$running" ] || { pgrep -fa '/tmp/fake-hosts\.|10\.77\.0\.'; fail "processes of the fake hosts left running"; }
expect_error 2 "--hosts '0'" -- "$SLM_SRCDIR/launch/fake-hosts" --hosts 0 true
expect_error 2 "--delay-ms 'x'" -- "$SLM_SRCDIR/launch/fake-hosts" --delay-ms x true
expect_error 2 "--rate and --delay-ms need --fake-hosts" -- "$SLM_SRCDIR/launch/scale" --rate 1gbit
