"""Sums Nsight Compute's per-launch `gpu__time_duration.sum` by kernel name (profile.sh)."""
import csv, sys, collections

rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 5]
start = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
rows = rows[start:]
head = rows[0]
name_col, metric_col, value_col = head.index("Kernel Name"), head.index("Metric Name"), head.index("Metric Value")
total = collections.Counter()
count = collections.Counter()
for r in rows[1:]:
    if r[metric_col] != "gpu__time_duration.sum":
        continue
    try:
        ns = float(r[value_col].replace(",", ""))
    except ValueError:
        continue
    unit = r[head.index("Metric Unit")] if "Metric Unit" in head else "ns"
    ns *= {"ns": 1, "nsecond": 1, "us": 1e3, "usecond": 1e3, "ms": 1e6, "msecond": 1e6}.get(unit, 1)
    key = r[name_col][:110]
    total[key] += ns
    count[key] += 1
all_ns = sum(total.values())
print(f"{len(rows) - 1} launches, {all_ns / 1e6:.1f} ms of kernel time")
for key, ns in total.most_common(45):
    print(f"{ns / 1e6:9.2f} ms {100 * ns / all_ns:5.1f}% {count[key]:6d}x  {key}")
