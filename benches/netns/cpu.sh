# CPU time the hypervisor took from this VM (steal), for the netns benches (sourced by
# links.sh and fair.sh). On the shared two-core VM these benches run on, the host took
# 40-50 % of the CPU while a Wi-Fi cell ran (vmstat, 3 December 2026): the largest
# source of the timing noise in their figures, and one no process's counters show.

# cpu_ticks: "STEAL TOTAL", the machine's steal and total CPU ticks so far (/proc/stat).
cpu_ticks() {
  awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; print $9, t }' /proc/stat
}

# steal_since "STEAL TOTAL": the share of the CPU time since that reading the host took.
steal_since() {
  local s0 t0 s1 t1
  read -r s0 t0 <<< "$1"
  read -r s1 t1 <<< "$(cpu_ticks)"
  awk -v s=$((s1 - s0)) -v t=$((t1 - t0)) 'BEGIN { if (t > 0) printf "%.0f %%", 100 * s / t; else printf "?" }'
}
