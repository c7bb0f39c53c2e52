"""The ``peers`` blocks of RESULTS.md and README.md, from ``results/peers*.json``
(tools/peer_comparison.py): one table per dataset pair (each side at equal images seen, and
InstanceFCN again at Mask R-CNN's training time), the lr sweep, and a sentence that reads it."""
from results_markdown import AR_HEAD, AR_KEYS, fmt, machine_line, table

PEER_NAMES = {"instancefcn": "InstanceFCN", "mask_rcnn": "Mask R-CNN (class-agnostic)", "rpn": "RPN alone"}


def peers_blocks(record, name="peers"):
    """``{name: tables, name + "_summary": sentences}`` for a results/peers*.json record."""
    b, sw = record["budget"], record["sweep"]
    partial = "" if record.get("complete", True) else "**Partial: the run was interrupted; the sides it finished.** "
    lines = [machine_line(record.get("machine")), "", partial + f"`{record['command']}`: {b['images_seen']} images seen "
             f"by each model ({b['iters']} iterations of {b['ims_per_batch']}); {record['metric']}; percent "
             "(– = no ground truth of that size, or no masks).", ""]
    summary = []
    for run in record["runs"]:
        sides = run["sides"]
        rows = [_result_row(PEER_NAMES.get(k, k), v["config"], v) for k, v in sides.items()]
        eq = run.get("equal_time")
        if eq:
            rows.append(_result_row(f"InstanceFCN at {PEER_NAMES[eq['against']]}'s training time ({eq['iters']} iterations)",
                                    sides[eq["side"]]["config"], eq))
        lines += [f"Trained on `{run['train']}`, scored on `{run['test']}`:", "",
                  *table(("model", "config", "lr", *(f"mask {h}" for h in AR_HEAD), *(f"box {h}" for h in AR_HEAD),
                          "train s", "s / image"), rows), ""]
        sweep_rows = [(PEER_NAMES.get(k, k), f"{s['lr']:g}", "diverged" if s["diverged"] else s["AR@100"],
                       s["train_s"], "yes" if s["lr"] == v["lr"] else "")
                      for k, v in sides.items() for s in v["sweep"]]
        if sweep_rows:
            split = run.get("sweep_split")
            where = (f"; trained on {split['images']} images of `{run['train']}` and scored on the other "
                     f"{split['held_out_images']}" if split else "")
            lines += [f"Learning-rate sweep ({sw['iters']} iterations each; {sw['rule']}{where}):", "",
                      *table(("model", "lr", "AR@100", "train s", "chosen"), sweep_rows), ""]
        summary.append(_peers_sentence(run, b))
    return {name: "\n".join(lines).rstrip(), name + "_summary": "\n\n".join(summary)}


def _result_row(label, config, r):
    """One table row: a trained model's lr, mask and box AR, training and inference seconds."""
    return (label, f"`{config}`", f"{r['lr']:g}", *((r["mask"] or {}).get(m) for m in AR_KEYS),
            *(r["box"].get(m) for m in AR_KEYS), r["train_s"], f"{r['infer_s_per_image']:.2f}")


def _word(a, p):
    return "higher" if a > p else "lower" if a < p else "equal"


def _peers_sentence(run, budget):
    """Which proposes better, where (sizes; AR@10 vs AR@1000) and how fast, read from one run."""
    sides = run["sides"]
    if "instancefcn" not in sides or len(sides) < 2:
        return f"`{run['test']}`: no peer was run beside InstanceFCN."
    ifcn = sides["instancefcn"]
    out = [f"On `{run['test']}`, at equal budget ({budget['images_seen']} images, the same VGG-16-FPN and "
           "ImageNet start, each at its swept lr):"]

    def compare(task, peer, keys):
        parts = []
        for key, label in keys:
            a, p = ifcn[task].get(key), peer[task].get(key)
            if a is None or p is None:
                continue
            parts.append(f"{label} {_word(a, p)} ({fmt(a)} vs {fmt(p)})")
        return ", ".join(parts)

    keys = list(zip(AR_KEYS, ("AR@10", "AR@100", "AR@1000", "small", "medium", "large")))
    for name in ("mask_rcnn", "rpn"):
        if name not in sides:
            continue
        peer = sides[name]
        task = "mask" if peer["mask"] and ifcn["mask"] else "box"
        speed = (f"it trained in {fmt(ifcn['train_s'])} s vs {fmt(peer['train_s'])} s and infers in "
                 f"{ifcn['infer_s_per_image']:.2f} s vs {peer['infer_s_per_image']:.2f} s per image")
        out.append(f"against {PEER_NAMES[name]}, InstanceFCN's {task} AR is {compare(task, peer, keys)} "
                   f"(sizes at AR@1000); {speed}")
    text = out[0] + " " + "; ".join(out[1:]) + "."
    eq = run.get("equal_time")
    if eq and eq["mask"] and sides[eq["against"]]["mask"]:
        peer = sides[eq["against"]]
        a, p = eq["mask"]["AR@100"], peer["mask"]["AR@100"]
        text += (f" At {PEER_NAMES[eq['against']]}'s training time ({eq['iters']} iterations, {fmt(eq['train_s'])} s "
                 f"vs {fmt(peer['train_s'])} s), InstanceFCN's mask AR@100 is {fmt(a)} vs {fmt(p)} "
                 f"({_word(a, p)}; AR@10 {fmt(eq['mask']['AR@10'])} vs "
                 f"{fmt(peer['mask']['AR@10'])}), at {eq['infer_s_per_image']:.2f} s vs "
                 f"{peer['infer_s_per_image']:.2f} s per image.")
    return text
