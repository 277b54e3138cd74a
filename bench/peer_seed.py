#!/usr/bin/env python3
"""seed-270m's PyTorch peer: LoRA training of ../shared/bench/peer_torch.py's 270m shape over the
token sequences loratune trained (bench/seed.ts writes them), one AdamW step per sequence (batch 1,
no padding), cross-entropy over the counted targets (-1 = not counted).

Usage: peer_seed.py SEQUENCES.json
  SEQUENCES.json: {"shape", "learning_rate", "weight_decay", "epsilon", "sequences": [{"ids", "targets"}]}
Prints one JSON line: tokens, seconds (the whole training loop), tokens_per_s, peak RSS, threads.
Run it as ../shared/bench/run-peer.sh runs peer_torch.py: Debian's /usr/bin/python3, tcmalloc in
LD_PRELOAD, 2 threads.
"""
import json, os, sys, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "bench"))
import peer_torch  # noqa: E402  (found through the path above)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def main():
    torch.set_num_threads(peer_torch.THREADS)
    with open(sys.argv[1]) as f:
        job = json.load(f)
    model, build_s = peer_torch.build(job["shape"])
    model.train()
    vocab = model.c.vocab
    optimizer = torch.optim.AdamW(model.lora_params(), lr=job["learning_rate"],
                                  weight_decay=job["weight_decay"], eps=job["epsilon"])
    sequences = [(torch.tensor(s["ids"])[None], torch.tensor(s["targets"])) for s in job["sequences"]]
    tokens = sum(ids.shape[1] for ids, _ in sequences)
    loss_sum = 0.0
    with peer_torch.Foreign() as foreign:
        start = time.perf_counter()
        for k, (ids, targets) in enumerate(sequences):
            optimizer.zero_grad(set_to_none=True)
            logits = model(ids)
            loss = F.cross_entropy(logits.view(-1, vocab), targets, ignore_index=-1)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item()
            del logits, loss  # free them before the next forward, as peer_torch.py does
            if (k + 1) % 50 == 0:
                print(f"  [peer seed] {k + 1}/{len(sequences)} {time.perf_counter() - start:.1f}s",
                      file=sys.stderr, flush=True)
        seconds = time.perf_counter() - start
    print(json.dumps(dict(
        shape=model.c.name, examples=len(sequences), tokens=tokens, seconds=round(seconds, 3),
        tokens_per_s=round(tokens / seconds, 1), mean_loss=round(loss_sum / len(sequences), 4),
        build_s=round(build_s, 2), peak_rss_mb=round(peer_torch.peak_rss_mb()),
        foreign_cpu_share=round(foreign.share, 2), threads=torch.get_num_threads(), torch=torch.__version__,
        alloc=os.environ.get("LD_PRELOAD", "glibc"))), flush=True)


if __name__ == "__main__":
    main()
