//! Checkpoints: save and load round trips in f32 and f64 (bit-identical outputs after loading
//! into a differently initialised model), buffers, files that do not fit the model, and
//! truncated, corrupt and hostile files, which must be an `Err` and never a panic.

use std::path::Path;
use tapegrad_nn::DropoutNew;
use tapegrad_nn::LinearNew;
use tapegrad_tensor::TensorNew;

use proptest::prelude::*;
use tapegrad_autograd::Var;
use tapegrad_golden::Scratch;
use tapegrad_nn::{load, load_tensors, save, save_tensors, Dropout, Error, Linear, Mode, ModeChange, Module, Visit};
use tapegrad_tensor::{Float, Generator, Tensor};

// ─── models ────────────────────────────────────────────────────────────────────

#[derive(tapegrad_nn::Module)]
struct Net<T: Float = f32> {
    fc: Linear<T>,
    drop: Dropout<T>,
    hidden: Vec<Linear<T>>,
}

impl<T: Float> Net<T> {
    fn new(seed: u64, depth: usize) -> Net<T> {
        let mut gen = Generator::new(seed);
        Net {
            fc: Linear::<T>::new(5, 8, &mut gen),
            drop: Dropout::<T>::new(0.5).unwrap(),
            hidden: (0..depth).map(|_| Linear::<T>::new(8, 8, &mut gen)).collect(),
        }
    }
}

impl<T: Float> Module<T> for Net<T> {
    fn forward(&self, x: &Var<T>) -> tapegrad_nn::Result<Var<T>> {
        let mut h = self.drop.forward(&self.fc.forward(x)?.relu())?;
        for layer in &self.hidden {
            h = layer.forward(&h)?.tanh();
        }
        Ok(h)
    }
}

/// A hand-written leaf with one parameter and one buffer (like BatchNorm's running mean).
struct Stats {
    scale: Var,
    running_mean: Var,
}

impl Stats {
    fn new(scale: f32, mean: &[f32]) -> Stats {
        Stats {
            scale: Var::parameter(Tensor::full(&[mean.len()], scale)),
            running_mean: Var::new(Tensor::from_vec(mean.to_vec(), &[mean.len()]).unwrap()),
        }
    }
}

impl Visit for Stats {
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(&str, &Var)) {
        f(&tapegrad_nn::module::join(prefix, "scale"), &self.scale);
    }
    fn visit_buffers(&self, prefix: &str, f: &mut dyn FnMut(&str, &Var)) {
        f(&tapegrad_nn::module::join(prefix, "running_mean"), &self.running_mean);
    }
    fn set_mode(&mut self, _: ModeChange) {}
    fn visit_modes(&self, _: &mut dyn FnMut(Mode)) {}
    fn fmt_module(&self, f: &mut std::fmt::Formatter<'_>, _: usize) -> std::fmt::Result {
        write!(f, "Stats")
    }
}

impl Module for Stats {
    fn forward(&self, x: &Var) -> tapegrad_nn::Result<Var> {
        x.sub(&Var::new(self.running_mean.value()))?.mul(&self.scale)
    }
}

#[derive(tapegrad_nn::Module)]
struct WithStats {
    fc: Linear,
    stats: Vec<Stats>,
}

// ─── helpers ───────────────────────────────────────────────────────────────────

fn bits32(t: &Tensor<f32>) -> Vec<u32> {
    t.to_vec().iter().map(|x| x.to_bits()).collect()
}

fn bits64(t: &Tensor<f64>) -> Vec<u64> {
    t.to_vec().iter().map(|x| x.to_bits()).collect()
}

/// Every parameter and buffer value, in order.
fn snapshot<T: Float, M: Visit<T>>(m: &M) -> Vec<(String, Vec<usize>, Vec<u64>)> {
    let mut out = vec![];
    let mut push = |n: &str, v: &Var<T>| {
        out.push((n.to_string(), v.shape(), v.value().to_vec().iter().map(|x| x.to_f64().to_bits()).collect()))
    };
    m.visit_parameters("", &mut push);
    m.visit_buffers("", &mut push);
    out
}

fn input<T: Float>() -> Var<T> {
    Var::new(Tensor::<T>::randn(&[3, 5], &mut Generator::new(42)))
}

/// A safetensors file from a raw JSON header and data (the header padded with spaces to 8 bytes).
pub(crate) fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.as_bytes().to_vec();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

fn expect_format(r: tapegrad_nn::Result<()>, what: &str) -> String {
    match r {
        Err(e @ Error::Format { .. }) => e.to_string(),
        other => panic!("{what}: expected a Format error, got {other:?}"),
    }
}

fn expect_checkpoint(r: tapegrad_nn::Result<()>) -> String {
    match r {
        Err(e @ Error::Checkpoint { .. }) => e.to_string(),
        other => panic!("expected a Checkpoint error, got {other:?}"),
    }
}

// ─── round trips ───────────────────────────────────────────────────────────────

#[test]
fn save_then_load_into_a_fresh_model_gives_bit_identical_outputs_f32() {
    let dir = Scratch::new("nn-ckpt", "roundtrip32");
    let path = dir.path("net.safetensors");
    let mut a: Net = Net::new(0, 2);
    let mut b: Net = Net::new(1, 2);
    a.eval();
    b.eval();
    let x = input::<f32>();
    let (ya, yb) = (a.forward(&x).unwrap().value(), b.forward(&x).unwrap().value());
    assert_ne!(bits32(&ya), bits32(&yb), "differently seeded models should differ before loading");

    save(&a, &path).unwrap();
    load(&mut b, &path).unwrap();
    assert_eq!(bits32(&b.forward(&x).unwrap().value()), bits32(&ya));
    for ((na, va), (nb, vb)) in a.named_parameters().into_iter().zip(b.named_parameters()) {
        assert_eq!(na, nb);
        assert_eq!(bits32(&va.value()), bits32(&vb.value()), "{na}");
    }
    // Only the parameters, with their dotted names, are in the file (Dropout has none).
    let names: Vec<String> = load_tensors::<f32>(&path).unwrap().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["fc.bias", "fc.weight", "hidden.0.bias", "hidden.0.weight", "hidden.1.bias", "hidden.1.weight"]);
    // No temporary file is left beside it.
    assert_eq!(dir.files(), ["net.safetensors"]);
}

#[test]
fn save_then_load_into_a_fresh_model_gives_bit_identical_outputs_f64() {
    let dir = Scratch::new("nn-ckpt", "roundtrip64");
    let path = dir.path("net64.safetensors");
    let mut a: Net<f64> = Net::new(3, 1);
    let mut b: Net<f64> = Net::new(4, 1);
    a.eval();
    b.eval();
    let x = input::<f64>();
    let ya = a.forward(&x).unwrap().value();
    assert_ne!(bits64(&ya), bits64(&b.forward(&x).unwrap().value()));
    save(&a, &path).unwrap();
    load(&mut b, &path).unwrap();
    assert_eq!(bits64(&b.forward(&x).unwrap().value()), bits64(&ya));
}

#[test]
fn load_writes_into_the_existing_vars_so_clones_see_it() {
    let dir = Scratch::new("nn-ckpt", "existing");
    let path = dir.path("m.safetensors");
    let a: Net = Net::new(0, 0);
    let mut b: Net = Net::new(1, 0);
    let held = b.fc.weight.clone(); // as an optimiser holds it
    save(&a, &path).unwrap();
    load(&mut b, &path).unwrap();
    assert_eq!(bits32(&held.value()), bits32(&a.fc.weight.value()));
    assert!(held.requires_grad(), "a parameter stays a parameter");
}

#[test]
fn buffers_are_saved_and_loaded() {
    let dir = Scratch::new("nn-ckpt", "buffers");
    let path = dir.path("stats.safetensors");
    let mut gen = Generator::new(0);
    let a = WithStats { fc: Linear::new(2, 3, &mut gen), stats: vec![Stats::new(2.0, &[0.5, -1.0, 3.0])] };
    let mut b = WithStats { fc: Linear::new(2, 3, &mut gen), stats: vec![Stats::new(1.0, &[0.0, 0.0, 0.0])] };
    save(&a, &path).unwrap();
    let names: Vec<String> = load_tensors::<f32>(&path).unwrap().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["fc.bias", "fc.weight", "stats.0.running_mean", "stats.0.scale"]);
    load(&mut b, &path).unwrap();
    assert_eq!(b.stats[0].running_mean.value().to_vec(), [0.5, -1.0, 3.0]);
    assert_eq!(snapshot(&a), snapshot(&b));
    let x = Var::new(Tensor::ones(&[4, 3]));
    assert_eq!(bits32(&a.stats[0].forward(&x).unwrap().value()), bits32(&b.stats[0].forward(&x).unwrap().value()));
    // A buffer stays a buffer: loading does not make it require a gradient.
    assert!(!b.stats[0].running_mean.requires_grad());
}

#[test]
fn save_overwrites_an_existing_file() {
    let dir = Scratch::new("nn-ckpt", "overwrite");
    let path = dir.write("m.safetensors", b"old contents");
    let a: Net = Net::new(0, 1);
    save(&a, &path).unwrap();
    let mut b: Net = Net::new(9, 1);
    load(&mut b, &path).unwrap();
    assert_eq!(snapshot(&a), snapshot(&b));
    assert_eq!(dir.files(), ["m.safetensors"]);
}

#[test]
fn saves_leave_no_temporary_file_behind() {
    let dir = Scratch::new("nn-ckpt", "no-temp");
    let path = dir.path("m.safetensors");
    for seed in 0..3 {
        save(&Net::<f32>::new(seed, 1), &path).unwrap();
        save_tensors(&[("t".to_string(), Tensor::<f64>::ones(&[2]))], dir.path("t.safetensors")).unwrap();
        assert_eq!(dir.files(), ["m.safetensors", "t.safetensors"]);
    }
    let mut b: Net = Net::new(9, 1);
    load(&mut b, &path).unwrap();
    assert_eq!(snapshot(&b), snapshot(&Net::<f32>::new(2, 1)));
}

#[test]
fn a_failed_save_leaves_no_temporary_file_and_the_old_file_intact() {
    let dir = Scratch::new("nn-ckpt", "failed-save");
    let model: Net = Net::new(0, 1);
    // The directory is missing: the temporary file cannot even be created.
    let missing = dir.path("missing").join("m.safetensors");
    match save(&model, &missing) {
        Err(e @ Error::Io { .. }) => assert!(e.to_string().contains("m.safetensors"), "{e}"),
        other => panic!("expected an Io error, got {other:?}"),
    }
    assert!(dir.files().is_empty(), "{:?}", dir.files());
    // The target is a non-empty directory: the temporary file is written, the rename fails.
    let target = dir.path("m.safetensors");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), b"x").unwrap();
    assert!(matches!(save(&model, &target), Err(Error::Io { .. })));
    assert_eq!(dir.files(), ["m.safetensors"]);
    assert_eq!(std::fs::read(target.join("keep")).unwrap(), b"x");
    // Two tensors of one name: refused before anything is written; the old file stays.
    let path = dir.write("t.safetensors", b"old");
    let t = Tensor::<f32>::ones(&[1]);
    let r = save_tensors(&[("a".to_string(), t.clone()), ("a".to_string(), t)], &path);
    assert!(matches!(r, Err(Error::Format { .. })), "{r:?}");
    assert_eq!(dir.files(), ["m.safetensors", "t.safetensors"]);
    assert_eq!(std::fs::read(&path).unwrap(), b"old");
}

#[test]
fn a_save_removes_the_temporary_files_of_crashed_saves_of_the_same_file() {
    let dir = Scratch::new("nn-ckpt", "stale");
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    let write = |name: &str, old: bool| {
        let path = dir.write(name, b"half a checkpoint");
        if old {
            std::fs::File::options().write(true).open(&path).unwrap().set_modified(two_hours_ago).unwrap();
        }
    };
    // No process has id 2^32 - 2 (Linux's pid_max is at most 2^22).
    let gone = u32::MAX - 1;
    let stale = format!(".m.safetensors.tmp-{gone}-0");
    write(&stale, true);
    let mut kept = vec![
        format!(".m.safetensors.tmp-{gone}-1"),                 // changed a moment ago
        format!(".m.safetensors.tmp-{}-7", std::process::id()), // this process's own
        format!(".other.safetensors.tmp-{gone}-0"),             // another target's
        ".m.safetensors.tmp-notes".to_string(),                 // not the pattern
    ];
    write(&kept[0], false);
    for name in &kept[1..] {
        write(name, true);
    }
    save(&Net::<f32>::new(0, 1), dir.path("m.safetensors")).unwrap();
    kept.push("m.safetensors".to_string());
    if !Path::new("/proc/self").exists() {
        // Without /proc, a process cannot be looked up: a leftover goes after a day.
        kept.push(stale);
    }
    kept.sort();
    assert_eq!(dir.files(), kept);
}

#[test]
fn named_tensors_round_trip_bit_for_bit_including_odd_values() {
    let dir = Scratch::new("nn-ckpt", "tensors");
    let path = dir.path("t.safetensors");
    let odd = vec![0.0f32, -0.0, f32::MIN_POSITIVE / 2.0, f32::MAX, f32::INFINITY, f32::NAN, 1.0 / 3.0];
    let tensors = vec![
        ("b".to_string(), Tensor::from_vec(odd.clone(), &[7]).unwrap()),
        ("a".to_string(), Tensor::<f32>::scalar(2.5)),
        ("empty".to_string(), Tensor::<f32>::zeros(&[0, 3])),
        // A transposed view is saved in its logical (row-major) order.
        ("t".to_string(), Tensor::<f32>::arange(6).reshape(&[2, 3]).unwrap().t().unwrap()),
    ];
    save_tensors(&tensors, &path).unwrap();
    let back = load_tensors::<f32>(&path).unwrap();
    let names: Vec<&str> = back.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a", "b", "empty", "t"]);
    assert_eq!(back[0].1.shape(), &[] as &[usize]);
    assert_eq!(back[0].1.to_vec(), [2.5]);
    assert_eq!(bits32(&back[1].1), odd.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
    assert_eq!(back[2].1.shape(), &[0, 3]);
    assert_eq!(back[3].1.shape(), &[3, 2]);
    assert_eq!(back[3].1.to_vec(), [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    // The wrong dtype is named.
    let err = load_tensors::<f64>(&path).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err:?}");
    assert!(err.to_string().contains("\"b\" (F32)"), "{err}");
}

#[test]
fn duplicate_names_are_refused_on_save() {
    let dir = Scratch::new("nn-ckpt", "dup");
    let t = Tensor::<f32>::zeros(&[1]);
    let err = save_tensors(&[("x".to_string(), t.clone()), ("x".to_string(), t)], dir.path("d.safetensors"));
    assert!(expect_format(err, "duplicate").contains("\"x\""));
    assert!(dir.files().is_empty(), "nothing written");
}

// ─── files that do not fit the model ───────────────────────────────────────────

#[test]
fn missing_extra_and_wrongly_shaped_tensors_are_all_named_in_one_error() {
    let dir = Scratch::new("nn-ckpt", "mismatch");
    let path = dir.path("m.safetensors");
    let mut model: Net = Net::new(0, 2);
    let mut tensors: Vec<(String, Tensor<f32>)> =
        model.named_parameters().into_iter().map(|(n, v)| (n, v.value())).collect();
    tensors.retain(|(n, _)| n != "hidden.1.bias"); // missing
    tensors.push(("hidden.2.weight".into(), Tensor::zeros(&[8, 8]))); // extra
    tensors.push(("zzz".into(), Tensor::zeros(&[1]))); // extra
    for (n, t) in &mut tensors {
        if n == "fc.weight" {
            *t = Tensor::zeros(&[5, 8]); // transposed shape
        }
    }
    save_tensors(&tensors, &path).unwrap();
    let before = snapshot(&model);
    let msg = expect_checkpoint(load(&mut model, &path));
    for needle in
        ["missing \"hidden.1.bias\"", "\"hidden.2.weight\"", "\"zzz\"", "\"fc.weight\" has shape [5, 8]", "[8, 5]"]
    {
        assert!(msg.contains(needle), "{needle:?} not in {msg}");
    }
    assert!(msg.contains("m.safetensors"), "the path is named: {msg}");
    assert_eq!(snapshot(&model), before, "a failed load changes nothing");
}

#[test]
fn a_model_of_another_depth_is_refused() {
    let dir = Scratch::new("nn-ckpt", "depth");
    let path = dir.path("m.safetensors");
    save(&Net::<f32>::new(0, 1), &path).unwrap();
    let msg = expect_checkpoint(load(&mut Net::<f32>::new(0, 2), &path));
    assert!(msg.contains("missing \"hidden.1.weight\", \"hidden.1.bias\""), "{msg}");
    let msg = expect_checkpoint(load(&mut Net::<f32>::new(0, 0), &path));
    assert!(msg.contains("unexpected \"hidden.0.bias\", \"hidden.0.weight\""), "{msg}");
}

#[test]
fn floats_of_another_dtype_are_converted_and_other_dtypes_are_refused() {
    let dir = Scratch::new("nn-ckpt", "dtype");
    let path = dir.path("m.safetensors");
    // F64 into an f32 model: each value rounded to nearest, as PyTorch's copy_ does.
    let wide: Net<f64> = Net::new(0, 1);
    save(&wide, &path).unwrap();
    let mut model: Net<f32> = Net::new(1, 1);
    load(&mut model, &path).unwrap();
    for ((name, w), (_, n)) in wide.named_parameters().into_iter().zip(model.named_parameters()) {
        let want: Vec<f32> = w.value().to_vec().iter().map(|&x| x as f32).collect();
        assert_eq!(n.value().to_vec(), want, "{name}");
    }
    // And back: F32 into an f64 model, exactly.
    save(&model, &path).unwrap();
    let mut back: Net<f64> = Net::new(2, 1);
    load(&mut back, &path).unwrap();
    for ((name, b), (_, n)) in back.named_parameters().into_iter().zip(model.named_parameters()) {
        let want: Vec<f64> = n.value().to_vec().iter().map(|&x| f64::from(x)).collect();
        assert_eq!(b.value().to_vec(), want, "{name}");
    }

    // One tensor of a dtype that is no float (I32) in an otherwise fitting file.
    let header = r#"{"":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}}"#;
    let path = dir.write("i32.safetensors", &raw_file(header, &[0; 8]));
    let mut leaf = Var::parameter(Tensor::<f32>::ones(&[2]));
    let msg = expect_checkpoint(load(&mut leaf, &path));
    assert!(msg.contains("\"\" has dtype I32, the model wants a float tensor"), "{msg}");
    assert_eq!(leaf.value().to_vec(), vec![1.0, 1.0], "a failed load changes nothing");
}

// ─── truncated, corrupt and hostile files ──────────────────────────────────────

#[test]
fn a_missing_file_is_an_io_error_naming_the_path() {
    let dir = Scratch::new("nn-ckpt", "nofile");
    let path = dir.path("does-not-exist.safetensors");
    let err = load(&mut Net::<f32>::new(0, 0), &path).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("does-not-exist.safetensors"), "{err}");
    // Saving into a directory that does not exist is an Io error too.
    let err = save(&Net::<f32>::new(0, 0), dir.path("no/such/dir/m.safetensors")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    // A directory is not a checkpoint.
    assert!(load(&mut Net::<f32>::new(0, 0), dir.dir()).is_err());
}

#[test]
fn an_empty_file_is_refused() {
    let dir = Scratch::new("nn-ckpt", "empty");
    let path = dir.write("empty.safetensors", b"");
    expect_format(load(&mut Net::<f32>::new(0, 0), &path), "empty file");
    assert!(matches!(load_tensors::<f32>(&path), Err(Error::Format { .. })));
}

#[test]
fn truncated_files_are_refused_at_every_cut_point() {
    let dir = Scratch::new("nn-ckpt", "truncated");
    let full_path = dir.path("full.safetensors");
    let model: Net = Net::new(0, 1);
    save(&model, &full_path).unwrap();
    let bytes = std::fs::read(&full_path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut cuts = vec![1, 4, 7, 8, 9, 8 + header_len / 2, 8 + header_len - 1, 8 + header_len, 8 + header_len + 1];
    cuts.extend([(8 + header_len + bytes.len()) / 2, bytes.len() - 4, bytes.len() - 1]);
    for cut in cuts {
        let path = dir.write("cut.safetensors", &bytes[..cut]);
        let mut target: Net = Net::new(1, 1);
        let before = snapshot(&target);
        expect_format(load(&mut target, &path), &format!("cut at {cut} of {}", bytes.len()));
        assert_eq!(snapshot(&target), before, "cut at {cut}");
    }
    // And one byte too many.
    let mut long = bytes.clone();
    long.push(0);
    let path = dir.write("long.safetensors", &long);
    expect_format(load(&mut Net::<f32>::new(1, 1), &path), "trailing byte");
}

#[test]
fn lying_headers_are_refused_without_allocating_what_they_claim() {
    let dir = Scratch::new("nn-ckpt", "hostile");
    let mut cases: Vec<(&str, Vec<u8>)> = vec![];

    // A header length of 2^60 bytes, and one just past the end of the file.
    let mut huge = (1u64 << 60).to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}      ");
    cases.push(("2^60 header", huge));
    let mut past = 64u64.to_le_bytes().to_vec();
    past.extend_from_slice(b"{}      ");
    cases.push(("header past the end", past));
    let mut max = u64::MAX.to_le_bytes().to_vec();
    max.extend_from_slice(b"{}      ");
    cases.push(("u64::MAX header", max));
    // Headers that are not JSON, not UTF-8, or not the safetensors schema.
    cases.push(("not JSON", raw_file("this is not json", &[])));
    cases.push(("not UTF-8", raw_file("\u{0}", &[]).into_iter().map(|b| if b == 0 { 0xff } else { b }).collect()));
    cases.push(("a JSON list", raw_file("[1, 2, 3]", &[])));
    cases.push(("unknown dtype", raw_file(r#"{"":{"dtype":"F99","shape":[1],"data_offsets":[0,4]}}"#, &[0; 4])));
    cases.push(("negative offset", raw_file(r#"{"":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}"#, &[0; 4])));
    // Offsets out of range, overlapping, with a gap, reversed.
    cases
        .push(("offsets past the end", raw_file(r#"{"":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, &[0; 8])));
    cases.push((
        "overlapping",
        raw_file(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            &[0; 12],
        ),
    ));
    cases.push((
        "gap",
        raw_file(
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
            &[0; 12],
        ),
    ));
    cases.push(("reversed", raw_file(r#"{"":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#, &[0; 4])));
    // A shape whose element count overflows, and one that disagrees with its byte range.
    cases.push((
        "overflowing shape",
        raw_file(r#"{"":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}}"#, &[0; 4]),
    ));
    cases.push(("shape vs bytes", raw_file(r#"{"":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, &[0; 8])));
    cases.push((
        "shape of 2^40",
        raw_file(r#"{"":{"dtype":"F32","shape":[1099511627776],"data_offsets":[0,4]}}"#, &[0; 4]),
    ));

    cases.push(("a name twice", raw_file(r#"{"":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, &[0; 8])));
    cases.push((
        "65 dims",
        raw_file(
            &format!(r#"{{"":{{"dtype":"F32","shape":[{}],"data_offsets":[0,4]}}}}"#, vec!["1"; 65].join(",")),
            &[0; 4],
        ),
    ));
    cases.push(("sub-byte dtype", raw_file(r#"{"":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}"#, &[0; 2])));
    cases.push((
        "metadata not strings",
        raw_file(r#"{"__metadata__":{"a":1},"":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, &[0; 4]),
    ));
    // Byte ranges that tile 2^64 - 8 bytes, so that adding the header's size overflows.
    let size = (1u64 << 61) - 1;
    let ranges: Vec<String> = (0..8)
        .map(|i| {
            format!(r#""t{i}":{{"dtype":"U8","shape":[{size}],"data_offsets":[{},{}]}}"#, i * size, (i + 1) * size)
        })
        .collect();
    let tiling = raw_file(&format!("{{{}}}", ranges.join(",")), &[]);
    cases.push(("offsets summing to 2^64", tiling));

    for (what, bytes) in cases {
        let path = dir.write("hostile.safetensors", &bytes);
        let mut leaf = Var::parameter(Tensor::<f32>::zeros(&[1]));
        expect_format(load(&mut leaf, &path), what);
        assert!(matches!(load_tensors::<f32>(&path), Err(Error::Format { .. })), "{what}");
        assert_eq!(leaf.value().to_vec(), [0.0], "{what}: the model is unchanged");
    }
}

#[test]
fn a_header_length_over_the_limit_is_refused_before_the_header_is_read() {
    let dir = Scratch::new("nn-ckpt", "header-limit");
    let over = 100_000_001u64;
    // A short file: the limit is checked first, so the message names it (not the file's end).
    let mut short = over.to_le_bytes().to_vec();
    short.extend_from_slice(b"{}      ");
    let path = dir.write("short.safetensors", &short);
    let msg = expect_format(load(&mut Var::parameter(Tensor::<f32>::zeros(&[1])), &path), "short");
    assert!(msg.contains("100000001") && msg.contains("limit of 100000000 bytes"), "{msg}");
    // A file really that long (sparse): still refused by the limit, not parsed.
    let path = dir.path("long.safetensors");
    let mut file = std::fs::File::create(&path).unwrap();
    std::io::Write::write_all(&mut file, &over.to_le_bytes()).unwrap();
    file.set_len(8 + over).unwrap();
    drop(file);
    let msg = load_tensors::<f32>(&path).unwrap_err().to_string();
    assert!(msg.contains("limit of 100000000 bytes"), "{msg}");
}

#[test]
fn headers_of_many_tiny_values_are_parsed_without_keeping_them_or_refused() {
    let dir = Scratch::new("nn-ckpt", "tiny-values");
    let data: Vec<u8> = [0.5f32, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
    let tensor = r#""":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#;
    // A million metadata strings: valid, checked and dropped.
    let metadata: Vec<String> = (0..1_000_000).map(|i| format!(r#""{i}":"""#)).collect();
    let header = format!(r#"{{"__metadata__":{{{}}},{tensor}}}"#, metadata.join(","));
    let path = dir.write("metadata.safetensors", &raw_file(&header, &data));
    let mut w = Var::parameter(Tensor::<f32>::zeros(&[2]));
    load(&mut w, &path).unwrap();
    assert_eq!(w.value().to_vec(), [0.5, 2.0]);
    // A shape of a million 1s, and metadata values that are not strings: refused.
    let ones = vec!["1"; 1_000_000].join(",");
    let header = format!(r#"{{"":{{"dtype":"F32","shape":[2,{ones}],"data_offsets":[0,8]}}}}"#);
    let path = dir.write("dims.safetensors", &raw_file(&header, &data));
    let msg = expect_format(load(&mut w, &path), "a million dims");
    assert!(msg.contains("more than 64 dims"), "{msg}");
    let zeros = vec!["0"; 1_000_000].join(",");
    let header = format!(r#"{{"__metadata__":{{"a":[{zeros}]}},{tensor}}}"#);
    let path = dir.write("numbers.safetensors", &raw_file(&header, &data));
    expect_format(load(&mut w, &path), "metadata of numbers");
    assert_eq!(w.value().to_vec(), [0.5, 2.0]);
}

#[test]
fn many_empty_tensors_load() {
    // Zero-sized tensors share byte offsets; they still tile the data.
    let dir = Scratch::new("nn-ckpt", "empty-tensors");
    let entries: Vec<String> =
        (0..1000).map(|i| format!(r#""e{i:04}":{{"dtype":"F64","shape":[0,{i}],"data_offsets":[0,0]}}"#)).collect();
    let path = dir.write("e.safetensors", &raw_file(&format!("{{{}}}", entries.join(",")), &[]));
    let tensors = load_tensors::<f64>(&path).unwrap();
    assert_eq!(tensors.len(), 1000);
    assert_eq!((tensors[7].0.as_str(), tensors[7].1.shape()), ("e0007", &[0, 7][..]));
}

#[test]
fn a_hand_written_valid_file_loads() {
    // The format as documented, written without our writer: the reader is not only self-consistent.
    let dir = Scratch::new("nn-ckpt", "handwritten");
    let data: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
    let path = dir.write(
        "h.safetensors",
        &raw_file(r#"{"__metadata__":{"format":"pt"},"":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, &data),
    );
    let mut leaf = Var::parameter(Tensor::<f32>::zeros(&[2]));
    load(&mut leaf, &path).unwrap();
    assert_eq!(leaf.value().to_vec(), [1.5, -2.0]);
}

// ─── random corruption ─────────────────────────────────────────────────────────

/// The byte ranges of the runs of ASCII digits in `s`.
fn digit_runs(s: &str) -> Vec<(usize, usize)> {
    let b = s.as_bytes();
    let mut runs = vec![];
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            runs.push((start, i));
        } else {
            i += 1;
        }
    }
    runs
}

fn valid_bytes() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| {
        let dir = Scratch::new("nn-ckpt", "valid");
        let path = dir.path("v.safetensors");
        save(&Net::<f32>::new(0, 1), &path).unwrap();
        std::fs::read(&path).unwrap()
    })
}

/// Loads `bytes` into a fresh model: never panics; when it succeeds, the model holds exactly
/// what `load_tensors` reads from the file, with the model's shapes.
fn check_corrupt(dir: &Path, bytes: &[u8]) {
    let path = dir.join("c.safetensors");
    std::fs::write(&path, bytes).unwrap();
    let mut model: Net = Net::new(7, 1);
    let shapes: Vec<Vec<usize>> = model.named_parameters().iter().map(|(_, v)| v.shape()).collect();
    let before = snapshot(&model);
    match load(&mut model, &path) {
        Ok(()) => {
            let file = load_tensors::<f32>(&path).expect("load succeeded, so the file is readable");
            for (i, (name, var)) in model.named_parameters().into_iter().enumerate() {
                assert_eq!(var.shape(), shapes[i], "{name}");
                let (_, t) = file.iter().find(|(n, _)| *n == name).expect("every loaded name is in the file");
                assert_eq!(bits32(&var.value()), bits32(t), "{name}");
            }
        }
        Err(e) => {
            assert!(matches!(e, Error::Format { .. } | Error::Checkpoint { .. }), "{e:?}");
            assert_eq!(snapshot(&model), before, "a failed load changes nothing");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_byte_flips_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4)) {
        let dir = Scratch::new("nn-ckpt", "flips");
        let mut bytes = valid_bytes().to_vec();
        for (i, x) in &flips {
            let at = i.index(bytes.len());
            bytes[at] ^= x;
        }
        check_corrupt(dir.dir(), &bytes);
    }

    #[test]
    fn flips_in_the_header_never_panic(at in 0usize..200, x in 1u8..=255) {
        let dir = Scratch::new("nn-ckpt", "header-flips");
        let mut bytes = valid_bytes().to_vec();
        let at = at % bytes.len();
        bytes[at] ^= x;
        check_corrupt(dir.dir(), &bytes);
    }

    #[test]
    fn lying_numbers_in_the_header_never_panic(
        which in prop::collection::vec(any::<prop::sample::Index>(), 1..3),
        values in prop::collection::vec(prop::sample::select(vec![
            0u64, 1, 3, 4, 31, 32, 33, 255, 1 << 31, 1 << 32, (1 << 61) - 1, 1 << 61, 1 << 62, 1 << 63, u64::MAX - 7, u64::MAX,
        ]), 1..3),
    ) {
        // Rewrite one or two of the header's numbers (shapes and byte offsets) to edge values.
        let dir = Scratch::new("nn-ckpt", "numbers");
        let bytes = valid_bytes();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let mut header = std::str::from_utf8(&bytes[8..8 + n]).unwrap().trim_end().to_string();
        for (w, v) in which.iter().zip(&values) {
            let runs: Vec<(usize, usize)> = digit_runs(&header);
            let (start, end) = runs[w.index(runs.len())];
            header.replace_range(start..end, &v.to_string());
        }
        check_corrupt(dir.dir(), &raw_file(&header, &bytes[8 + n..]));
    }

    #[test]
    fn truncation_and_garbage_never_panic(cut in any::<prop::sample::Index>(), tail in prop::collection::vec(any::<u8>(), 0..16)) {
        let dir = Scratch::new("nn-ckpt", "garbage");
        let bytes = valid_bytes();
        let mut bytes = bytes[..cut.index(bytes.len())].to_vec();
        bytes.extend_from_slice(&tail);
        check_corrupt(dir.dir(), &bytes);
    }
}

/// A model with BatchNorm: its running statistics (buffers) travel with the parameters, so a
/// loaded model evaluates exactly like the saved one.
#[derive(tapegrad_nn::Module)]
struct Normed {
    fc: Linear,
    bn: tapegrad_nn::BatchNorm1d,
}

impl Module for Normed {
    fn forward(&self, x: &Var) -> tapegrad_nn::Result<Var> {
        self.bn.forward(&self.fc.forward(x)?)
    }
}

#[test]
fn batchnorm_running_statistics_are_saved_and_loaded() {
    let dir = Scratch::new("nn-ckpt", "batchnorm");
    let path = dir.path("bn.safetensors");
    let mut gen = Generator::new(3);
    let mut a = Normed { fc: Linear::new(4, 3, &mut gen), bn: tapegrad_nn::BatchNorm1d::new(3) };
    // Two training steps move the running statistics away from their initial 0 and 1.
    for _ in 0..2 {
        a.forward(&Var::new(Tensor::randn(&[8, 4], &mut gen))).unwrap();
    }
    a.eval();
    let mut b = Normed { fc: Linear::new(4, 3, &mut Generator::new(9)), bn: tapegrad_nn::BatchNorm1d::new(3) };
    b.eval();
    let x = Var::new(Tensor::randn(&[5, 4], &mut gen));
    let before = a.forward(&x).unwrap().value();
    assert_ne!(bits32(&b.forward(&x).unwrap().value()), bits32(&before));

    save(&a, &path).unwrap();
    load(&mut b, &path).unwrap();
    assert_eq!(bits32(&b.forward(&x).unwrap().value()), bits32(&before));
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<(String, String)> =
        file.tensors().into_iter().map(|(n, t)| (n, format!("{:?} {:?}", t.dtype(), t.shape()))).collect();
    names.sort();
    let want = [
        ("bn.bias", "F32 [3]"),
        ("bn.num_batches_tracked", "I64 []"),
        ("bn.running_mean", "F32 [3]"),
        ("bn.running_var", "F32 [3]"),
        ("bn.weight", "F32 [3]"),
        ("fc.bias", "F32 [3]"),
        ("fc.weight", "F32 [3, 4]"),
    ];
    let want: Vec<(String, String)> = want.iter().map(|(n, d)| (n.to_string(), d.to_string())).collect();
    assert_eq!(names, want, "parameters, BatchNorm's buffers and its int64 counter, by dotted name");
    assert_eq!((a.bn.num_batches_tracked(), b.bn.num_batches_tracked()), (2, 2), "the count travels too");
    for name in ["bn.running_mean", "bn.running_var"] {
        let (_, saved) = a.named_buffers().into_iter().find(|(n, _)| n == name).unwrap();
        let (_, loaded) = b.named_buffers().into_iter().find(|(n, _)| n == name).unwrap();
        assert_eq!(bits32(&saved.value()), bits32(&loaded.value()), "{name}");
    }
}
