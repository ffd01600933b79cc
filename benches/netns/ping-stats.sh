# Sourced by the netns benchmarks: the statistics of a `ping -D` log.
#
# ping_stats FILE SENT DECIMALS [UNTIL]: p50 / p99 / max of the replies in FILE and the
# share of echoes that got none; with UNTIL (unix seconds), only the replies that arrived
# by then count, and the line says how many of the SENT echoes that was.
ping_stats() {
  local file=$1 sent=$2 decimals=$3 until=${4:-}
  local loss
  loss=$(grep -oE '[0-9.]+% packet loss' "$file" | cut -d% -f1)
  awk -v until="$until" -F'time=' '/time=/ {
      t = substr($1, 2, index($1, "]") - 2) + 0
      if (until == "" || t <= until + 0) { split($2, a, " "); print a[1] }
    }' "$file" | sort -g |
    awk -v loss="$loss" -v until="$until" -v sent="$sent" -v d="$decimals" '{v[NR]=$1} END {
      n = NR
      if (n == 0) { print "no replies"; exit }
      p50=v[int(n*0.50)>0?int(n*0.50):1]; p99=v[int(n*0.99)>0?int(n*0.99):1];
      f = "%." d "f"
      printf "p50 " f " / p99 " f " / max " f " ms, %s%% lost", p50, p99, v[n], loss
      if (until != "") printf " (%d of %d replies while the flow ran)", n, sent}'
}
