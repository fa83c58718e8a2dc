#!/usr/bin/env python3
"""Write recipes/*.toml: one per task and student variant (plus the label-only baselines).

Usage: python3 scripts/make_recipes.py   (from the repository root; overwrites recipes/*.toml)

Epoch counts are the paper's (MPCFormer spec §2.2-2.4) scaled to a 2-core CPU budget; the
"w/o d" baselines get the same number of passes over the data as stage 1 + stage 2 together.
"""
from pathlib import Path

# task: (data dir, paper stage-1 epochs, our stage-1 epochs, our stage-2 epochs, max_seq_len, eval_every, extra)
TASKS = {
    "mrpc": ("MRPC", 20, 5, 3, 128, 50, ""),
    "rte": ("RTE", 50, 5, 3, 128, 40, ""),
    "stsb": ("STS-B", 100, 3, 3, 128, 100, ""),
    "cola": ("CoLA", 50, 3, 3, 128, 100, ""),
    "sst2": ("SST-2", 10, 0.5, 0.5, 128, 200, ""),
}
VARIANTS = {
    "quad-2quad": ("quad", "2quad"),
    "quad-2relu": ("quad", "2relu"),
}


def fmt(x):
    return repr(float(x)) if isinstance(x, float) and not float(x).is_integer() else str(int(x))


def header(task, data, comment):
    return f"""# {comment}
task = "{task}"
teacher = "checkpoints/teachers/{task}"
data = "$KD_ASSETS/data/glue/{data}"
"""


def main():
    out = Path("recipes")
    out.mkdir(exist_ok=True)
    for task, (data, paper_s1, s1, s2, seq, every, _) in TASKS.items():
        for name, (act, sm) in VARIANTS.items():
            text = header(task, data, f"{task.upper()}: MPCFormer student {act}+{sm} distilled from the fine-tuned MiniLM-L6 teacher.")
            text += f"""# Paper: stage 1 {paper_s1} epochs, stage 2 5 epochs (BertAdam, bs 32). CPU budget: {fmt(s1)} + {fmt(s2)}.
out = "checkpoints/students/{task}-{name}"
seed = 42
max_seq_len = {seq}
batch_size = 32

[student]
hidden_act = "{act}"
softmax_act = "{sm}"
init = "teacher"

[stage1]
epochs = {fmt(s1)}
optimizer = {{ kind = "bertadam", lr = 5e-5, schedule = {{ kind = "constant" }} }}

[stage2]
objective = "distill"
epochs = {fmt(s2)}
temperature = 1.0
eval_every = {every}
optimizer = {{ kind = "bertadam", lr = 1e-5, schedule = {{ kind = "bert_warmup_linear", warmup = 0.1 }} }}
"""
            (out / f"{task}-{name}.toml").write_text(text)
            # "w/o d": same student, teacher init, task labels only, same passes over the data.
            text = header(task, data, f"{task.upper()}: baseline MPCBert w/o d ({act}+{sm}, teacher init, gold labels only, no distillation).")
            text += f"""# Same data budget as the distilled student ({fmt(s1)} + {fmt(s2)} epochs); the teacher's fine-tuning recipe (AdamW 5e-5, warmup 0.1).
out = "checkpoints/students/{task}-{name}-wod"
seed = 42
max_seq_len = {seq}
batch_size = 32

[student]
hidden_act = "{act}"
softmax_act = "{sm}"
init = "teacher"

[stage2]
objective = "labels"
epochs = {fmt(s1 + s2)}
eval_every = {every}
optimizer = {{ kind = "adamw", lr = 5e-5, schedule = {{ kind = "warmup_linear", warmup = 0.1 }} }}
"""
            (out / f"{task}-{name}-wod.toml").write_text(text)
    # IMDb: seq 256, the teacher's 4,000-review training sample and 1,000-review dev sample
    # (scripts/teachers.sh kd:imdb); paper: seq 512, stage 1 30 epochs, stage 2 5.
    for name, (act, sm) in VARIANTS.items():
        common = f'''task = "imdb"
teacher = "checkpoints/teachers/imdb"
data = "$KD_ASSETS/data/imdb"
seed = 42
max_seq_len = 256
batch_size = 16
eval_batch_size = 32
sample_train = 4000
sample_dev = 1000
'''
        (out / f"imdb-{name}.toml").write_text(f'''# IMDb: MPCFormer student {act}+{sm}; seq 256 on a 4,000-review sample (CPU budget: 2 + 2 epochs).
{common}out = "checkpoints/students/imdb-{name}"

[student]
hidden_act = "{act}"
softmax_act = "{sm}"
init = "teacher"

[stage1]
epochs = 2
optimizer = {{ kind = "bertadam", lr = 5e-5, schedule = {{ kind = "constant" }} }}

[stage2]
objective = "distill"
epochs = 2
eval_every = 125
optimizer = {{ kind = "bertadam", lr = 1e-5, schedule = {{ kind = "bert_warmup_linear", warmup = 0.1 }} }}
''')
        (out / f"imdb-{name}-wod.toml").write_text(f'''# IMDb: baseline w/o d ({act}+{sm}, teacher init, gold labels only), same data budget (4 epochs).
{common}out = "checkpoints/students/imdb-{name}-wod"

[student]
hidden_act = "{act}"
softmax_act = "{sm}"
init = "teacher"

[stage2]
objective = "labels"
epochs = 4
eval_every = 125
optimizer = {{ kind = "adamw", lr = 5e-5, schedule = {{ kind = "warmup_linear", warmup = 0.1 }} }}
''')
    # A 6 -> 3 layer student (MPCFormer's layer map: student layer i <- teacher layer 2i+1).
    text = header("mrpc", "MRPC", "MRPC: 3-layer Quad+2Quad student from the 6-layer teacher (layer map k = 2).")
    text += """# Same budget as recipes/mrpc-quad-2quad.toml.
out = "checkpoints/students/mrpc-quad-2quad-3l"
seed = 42
max_seq_len = 128
batch_size = 32

[student]
hidden_act = "quad"
softmax_act = "2quad"
layers = 3
init = "teacher"

[stage1]
epochs = 5
optimizer = { kind = "bertadam", lr = 5e-5, schedule = { kind = "constant" } }

[stage2]
objective = "distill"
epochs = 3
temperature = 1.0
eval_every = 50
optimizer = { kind = "bertadam", lr = 1e-5, schedule = { kind = "bert_warmup_linear", warmup = 0.1 } }
"""
    (out / "mrpc-quad-2quad-3l.toml").write_text(text)
    # "w/o p,d": random init, labels only.
    text = header("mrpc", "MRPC", "MRPC: baseline MPCBert w/o p,d (Quad+2Quad, random init, gold labels only).")
    text += """# Same data budget as recipes/mrpc-quad-2quad.toml (8 epochs).
out = "checkpoints/students/mrpc-quad-2quad-wopd"
seed = 42
max_seq_len = 128
batch_size = 32

[student]
hidden_act = "quad"
softmax_act = "2quad"
init = "random"

[stage2]
objective = "labels"
epochs = 8
eval_every = 50
optimizer = { kind = "adamw", lr = 5e-5, schedule = { kind = "warmup_linear", warmup = 0.1 } }
"""
    (out / "mrpc-quad-2quad-wopd.toml").write_text(text)


if __name__ == "__main__":
    main()
