"""The table ``gan-seg evaluate`` prints, from the dict :func:`gan_seg.gan.evaluation.evaluate` returns.

Plain text, no Keras (the command line renders it; Python users can print it too).
"""


def evaluation_table(result):
    """A readable table of an evaluation result (the JSON's numbers, rounded for reading)."""
    conditional = result["kind"] == "cgan"
    names = list(result["histogram"])
    lines = [f"{result.get('model', 'generator')}: {result['kind'].upper()}, {result['n']} generated images, "
             f"seed {result['seed']}; judged by {result['classifier']['name']} "
             f"({result['classifier']['test_accuracy']:.2%} on the test set)",
             f"Frechet distance in the classifier's features, against the {result['reference']}:"]
    distances = [("generated", f"{result['fd']:.4f}"),
                 (f"floor ({result['floor']})", f"{result['fd_floor']:.4f}"),
                 ("ratio fd / floor", f"{result['fd_ratio']:.2f}")]
    width = max(len(label) for label, _ in distances)
    lines += [f"  {label.ljust(width)}  {value}" for label, value in distances]
    if conditional:
        lines.append(f"conditional accuracy        {result['conditional_accuracy']:.4f}   "
                     f"(the classifier on real test images: {result['real_accuracy']:.4f})")
    if "cas_generated" in result:
        cas = result["cas"]
        lines.append(f"classification accuracy score  generated {result['cas_generated']:.4f}   real "
                     f"{result['cas_real']:.4f}   (a new classifier, {cas['epochs']} epochs on "
                     f"{cas['images']} images, tested on the real test set)")
    lines.append(f"smallest class share        {result['min_class_share']:.4f}")
    lines.append("")
    header = ["class", "share"]
    if conditional:
        header += ["cond. acc", "real acc", "FD", "FD floor"]
    rows = []
    for name in names:
        row = [name, f"{result['histogram'][name]:.4f}"]
        if conditional:
            row += [f"{result['per_class_conditional_accuracy'][name]:.4f}",
                    f"{result['per_class_real_accuracy'][name]:.4f}",
                    f"{result['per_class_fd'][name]:.3f}", f"{result['per_class_fd_floor'][name]:.3f}"]
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        lines.append("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip())
    lines.append("")
    if result["targets"]:
        lines.append("targets (issue 8, at n = 10000):")
        lines += [f"  {'pass' if passed else 'FAIL'}  {target}"
                  for target, passed in result["targets"].items()]
    else:
        lines.append(f"note: n = {result['n']}: the floor uses {result['n']} real training images too; "
                     "FD's bias grows as n shrinks, so compare FD only with the floor of the same n; the "
                     "targets are judged at n = 10000 only")
    lines.append(f"seconds {result['seconds']}")
    return "\n".join(lines)
