//! Student construction (MPCFormer spec §2.1).
//!
//! The student is the teacher's architecture with `hidden_act`/`softmax_act` swapped for
//! MPC-friendly approximations, initialised from the teacher's weights (every tensor, pooler and
//! classifier included). A shallower student (teacher depth divisible by student depth, k =
//! T/S) takes teacher layer `i·k + k − 1` for its layer i — the layer whose attention it is
//! distilled against — and the teacher's embeddings, pooler and head. With `init = random` the
//! student gets BERT init instead (the "w/o p" ablation).

use std::collections::HashMap;

use candle_core::Device;

use crate::model::checkpoint::sorted_vars;
use crate::model::{BertConfig, ModelDir, ModelError};
use crate::train::recipe::{StudentInit, StudentSpec};

/// The layer correspondence between a student of depth S and a teacher of depth T = k·S.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerMap {
    pub teacher_layers: usize,
    pub student_layers: usize,
}

impl LayerMap {
    pub fn new(teacher_layers: usize, student_layers: usize) -> Result<Self, String> {
        if student_layers == 0 || !teacher_layers.is_multiple_of(student_layers) {
            return Err(format!(
                "student depth {student_layers} must divide the teacher's depth {teacher_layers}"
            ));
        }
        Ok(Self { teacher_layers, student_layers })
    }

    pub fn k(&self) -> usize {
        self.teacher_layers / self.student_layers
    }

    /// Teacher attention layer for student attention layer i (0-based): i·k + k − 1.
    pub fn attention(&self, i: usize) -> usize {
        i * self.k() + self.k() - 1
    }

    /// Teacher hidden representation for student representation j ∈ 0..=S (0 = embeddings): j·k.
    pub fn hidden(&self, j: usize) -> usize {
        j * self.k()
    }
}

/// What building the student did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StudentReport {
    /// Student tensor ← teacher tensor, for every copied tensor.
    pub copied: Vec<(String, String)>,
    /// Student tensors with no teacher counterpart (freshly initialised).
    pub initialised: Vec<String>,
    /// Teacher tensors the student does not use (e.g. skipped layers).
    pub unused: Vec<String>,
    /// The checkpoint every tensor came from instead of the teacher (`student.from`).
    pub from: Option<std::path::PathBuf>,
}

impl StudentReport {
    pub fn summary(&self) -> String {
        if let Some(dir) = &self.from {
            return format!("{} tensors copied from {} (student.from)", self.copied.len(), dir.display());
        }
        format!(
            "{} tensors copied from the teacher, {} initialised, {} teacher tensors unused",
            self.copied.len(),
            self.initialised.len(),
            self.unused.len()
        )
    }
}

/// The student's config: the teacher's with the approximations (and depth) replaced.
pub fn student_config(teacher: &BertConfig, spec: &StudentSpec) -> Result<(BertConfig, LayerMap), String> {
    let layers = spec.layers.unwrap_or(teacher.num_hidden_layers);
    let map = LayerMap::new(teacher.num_hidden_layers, layers)?;
    let mut cfg = teacher.clone();
    cfg.hidden_act = spec.hidden_act;
    cfg.softmax_act = spec.softmax_act;
    cfg.num_hidden_layers = layers;
    if let Some(c) = spec.softmax_2quad_c {
        cfg.softmax_2quad_c = c;
    }
    Ok((cfg, map))
}

/// Rewrite `bert.encoder.layer.{i}.…` to the teacher layer the student layer i comes from.
fn teacher_name(student_name: &str, map: &LayerMap) -> String {
    const P: &str = "bert.encoder.layer.";
    if let Some(rest) = student_name.strip_prefix(P) {
        if let Some((idx, tail)) = rest.split_once('.') {
            if let Ok(i) = idx.parse::<usize>() {
                return format!("{P}{}.{tail}", map.attention(i));
            }
        }
    }
    student_name.to_string()
}

/// Build the student from a loaded teacher.
pub fn build_student(
    teacher: &ModelDir,
    spec: &StudentSpec,
    seed: u64,
    device: &Device,
) -> Result<(ModelDir, LayerMap, StudentReport), ModelError> {
    let (cfg, map) = student_config(&teacher.config, spec)
        .map_err(|msg| ModelError::Config { path: teacher.dir.join("config.json"), msg })?;
    let num_labels = teacher.model.num_labels;
    let mut student = ModelDir::random(cfg, num_labels, seed, device)?;
    student.dir = teacher.dir.clone();
    let mut report = StudentReport::default();
    if let Some(dir) = &spec.from {
        return from_checkpoint(student, map, dir, seed, device);
    }
    let teacher_vars: HashMap<String, candle_core::Var> = sorted_vars(&teacher.varmap).into_iter().collect();
    let mut used = std::collections::HashSet::new();
    for (name, var) in sorted_vars(&student.varmap) {
        if spec.init == StudentInit::Random {
            report.initialised.push(name);
            continue;
        }
        let tname = teacher_name(&name, &map);
        match teacher_vars.get(&tname) {
            Some(t) if t.as_tensor().dims() == var.as_tensor().dims() => {
                var.set(t.as_tensor())?;
                used.insert(tname.clone());
                report.copied.push((name, tname));
            }
            _ => report.initialised.push(name),
        }
    }
    report.unused = teacher_vars.keys().filter(|n| !used.contains(*n)).cloned().collect();
    report.unused.sort();
    student.report.loaded = report.copied.iter().map(|(s, _)| s.clone()).collect();
    student.report.initialised = report.initialised.clone();
    Ok((student, map, report))
}

/// The student built from the teacher's config, with every tensor taken from the checkpoint in
/// `dir` (`StudentSpec::from`), which must have the same shape and approximations.
fn from_checkpoint(
    mut student: ModelDir,
    map: LayerMap,
    dir: &std::path::Path,
    seed: u64,
    device: &Device,
) -> Result<(ModelDir, LayerMap, StudentReport), ModelError> {
    let src = ModelDir::load(dir, None, seed, device)?;
    let (a, b) = (&student.config, &src.config);
    let shape = |c: &BertConfig| {
        (c.vocab_size, c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size, c.hidden_act, c.softmax_act, c.softmax_2quad_c)
    };
    if shape(a) != shape(b) || student.model.num_labels != src.model.num_labels {
        return Err(ModelError::Config {
            path: dir.join("config.json"),
            msg: format!(
                "student.from has {} layers × {} hidden, {}+{}, {} labels; the recipe's student has {} layers × {} hidden, {}+{}, {} labels",
                b.num_hidden_layers, b.hidden_size, b.hidden_act.name(), b.softmax_act.name(), src.model.num_labels,
                a.num_hidden_layers, a.hidden_size, a.hidden_act.name(), a.softmax_act.name(), student.model.num_labels
            ),
        });
    }
    // `ModelDir::load` fills what the file lacks (or has in another shape) with fresh weights;
    // a starting point must supply every tensor itself.
    if let Some(name) = src.report.initialised.first() {
        return Err(ModelError::MissingTensor { path: dir.join("model.safetensors"), name: name.clone() });
    }
    // Same config, so the same tensor names and shapes (`load` checked them against it).
    let from: HashMap<String, candle_core::Var> = sorted_vars(&src.varmap).into_iter().collect();
    let mut report = StudentReport { from: Some(dir.to_path_buf()), ..Default::default() };
    for (name, var) in sorted_vars(&student.varmap) {
        var.set(from[&name].as_tensor())?;
        report.copied.push((name.clone(), format!("{}:{name}", dir.display())));
    }
    student.report.loaded = report.copied.iter().map(|(s, _)| s.clone()).collect();
    student.report.initialised = vec![];
    Ok((student, map, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_map_follows_mpcformer() {
        let m = LayerMap::new(12, 4).unwrap();
        assert_eq!(m.k(), 3);
        assert_eq!((0..4).map(|i| m.attention(i)).collect::<Vec<_>>(), vec![2, 5, 8, 11]);
        assert_eq!((0..=4).map(|j| m.hidden(j)).collect::<Vec<_>>(), vec![0, 3, 6, 9, 12]);
        let id = LayerMap::new(6, 6).unwrap();
        assert_eq!((0..6).map(|i| id.attention(i)).collect::<Vec<_>>(), (0..6).collect::<Vec<_>>());
        assert!(LayerMap::new(6, 4).is_err());
        assert_eq!(teacher_name("bert.encoder.layer.1.output.dense.weight", &LayerMap::new(6, 3).unwrap()),
            "bert.encoder.layer.3.output.dense.weight");
        assert_eq!(teacher_name("classifier.bias", &m), "classifier.bias");
    }

    #[test]
    fn shallow_student_copies_mapped_layers() {
        let dev = Device::Cpu;
        let mut cfg = BertConfig::tiny(4, 16, 2, 50);
        cfg.set_labels(&["a".into(), "b".into()], false);
        let teacher = ModelDir::random(cfg, 2, 1, &dev).unwrap();
        let spec = StudentSpec {
            hidden_act: crate::model::HiddenAct::Quad,
            softmax_act: crate::model::SoftmaxAct::TwoQuad,
            layers: Some(2),
            init: StudentInit::Teacher,
            softmax_2quad_c: None,
            from: None,
        };
        let (s, map, rep) = build_student(&teacher, &spec, 7, &dev).unwrap();
        assert_eq!(map.k(), 2);
        assert_eq!(s.config.num_hidden_layers, 2);
        assert_eq!(s.config.hidden_act, crate::model::HiddenAct::Quad);
        assert!(rep.initialised.is_empty(), "{:?}", rep.initialised);
        let sv: HashMap<_, _> = sorted_vars(&s.varmap).into_iter().collect();
        let tv: HashMap<_, _> = sorted_vars(&teacher.varmap).into_iter().collect();
        let same = |a: &str, b: &str| {
            let x: Vec<f32> = sv[a].as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            let y: Vec<f32> = tv[b].as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            x == y
        };
        assert!(same("bert.encoder.layer.0.attention.self.query.weight", "bert.encoder.layer.1.attention.self.query.weight"));
        assert!(same("bert.encoder.layer.1.output.dense.weight", "bert.encoder.layer.3.output.dense.weight"));
        assert!(same("classifier.weight", "classifier.weight"));
        assert!(rep.unused.iter().any(|n| n.starts_with("bert.encoder.layer.0.")));
        // Copies, not aliases: changing the student leaves the teacher alone.
        let w = &sv["classifier.bias"];
        w.set(&(w.as_tensor() + 1.0).unwrap()).unwrap();
        assert!(!same("classifier.bias", "classifier.bias"));

        let rand = StudentSpec { init: StudentInit::Random, layers: None, ..spec };
        let (_, _, rep) = build_student(&teacher, &rand, 7, &dev).unwrap();
        assert!(rep.copied.is_empty());
    }
}
