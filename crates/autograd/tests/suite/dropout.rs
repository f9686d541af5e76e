//! Dropout on the tape: argument checks, the statistics of the mask, exact outputs and gradients
//! from the stored mask, seeding and replay, bit-identical masks on any thread count, and the
//! one-bit-per-element mask memory. Every property is checked in f32 and f64.

use tapegrad_autograd::{dropout, manual_seed, DropoutRecord, Error, Float, Generator, Tensor, Var};
use tapegrad_tensor::TensorNew;

/// A size spanning three full 64K-element chunks plus a tail that is not a multiple of 64.
const MULTI_CHUNK: usize = 3 * (1 << 16) + 1037;

fn record<T: Float>(y: &Var<T>) -> DropoutRecord {
    let tape = y.tape();
    let entry = tape.iter().rev().find(|e| e.name == "dropout").expect("a dropout entry on the tape");
    entry.dropout.clone().expect("the dropout entry carries its record")
}

/// Values in [1, 2): never zero, so a zero in the output means a dropped element.
fn nonzero<T: Float>(numel: usize, seed: u64) -> Tensor<T> {
    Tensor::<T>::rand(&[numel], &mut Generator::new(seed)).add_scalar(T::ONE)
}

/// Held by a test while it calls `manual_seed` and draws: tests run in parallel threads of one
/// process and the seed is process-wide.
static SEEDING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn bits<T: Float>(t: &Tensor<T>) -> Vec<u64> {
    t.to_vec().into_iter().map(|v| v.to_f64().to_bits()).collect()
}

// ─── argument checks ────────────────────────────────────────────────────────────────────────────

fn invalid_p_is_an_error<T: Float>() {
    let x = Var::parameter(Tensor::<T>::ones(&[8]));
    let mut gen = Generator::new(0);
    for p in [-0.1, -0.0 - f64::MIN_POSITIVE, 1.0 + f64::EPSILON, 1.5, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let err = dropout(&x, p, &mut gen).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { op: "dropout", .. }), "p = {p}: {err}");
        let msg = err.to_string();
        assert!(msg.starts_with("dropout") && msg.contains(" p "), "p = {p}: {msg}");
        assert!(x.dropout(p).is_err(), "p = {p}");
    }
    assert_eq!(gen.offset(), 0, "a rejected p draws nothing");
}

#[test]
fn invalid_p_is_an_error_f32() {
    invalid_p_is_an_error::<f32>();
}

#[test]
fn invalid_p_is_an_error_f64() {
    invalid_p_is_an_error::<f64>();
}

fn p_zero_is_the_identity<T: Float>() {
    let x = Var::parameter(nonzero::<T>(100, 1));
    let mut gen = Generator::new(0);
    let y = dropout(&x, 0.0, &mut gen).unwrap();
    assert!(y.same_node(&x), "p = 0 returns the input node itself");
    assert!(y.tape().is_empty(), "p = 0 records nothing");
    assert_eq!(gen.offset(), 0, "p = 0 draws nothing");
    assert!(x.dropout(0.0).unwrap().same_node(&x));
}

#[test]
fn p_zero_is_the_identity_f32() {
    p_zero_is_the_identity::<f32>();
}

#[test]
fn p_zero_is_the_identity_f64() {
    p_zero_is_the_identity::<f64>();
}

// ─── statistics ─────────────────────────────────────────────────────────────────────────────────

fn dropped_fraction_is_binomial<T: Float>() {
    let n = 100_000;
    let x = Var::parameter(nonzero::<T>(n, 2));
    let mut gen = Generator::new(3);
    for p in [0.1, 0.5, 0.9] {
        let y = dropout(&x, p, &mut gen).unwrap();
        let zeros = y.value().to_vec().iter().filter(|&&v| v == T::ZERO).count();
        let rec = record(&y);
        assert_eq!(n - rec.kept_count(), zeros, "the mask and the output agree");
        // Dropped ~ Binomial(n, p): within 5 standard deviations.
        let (mean, sd) = (n as f64 * p, (n as f64 * p * (1.0 - p)).sqrt());
        let dropped = zeros as f64;
        assert!((dropped - mean).abs() < 5.0 * sd, "p = {p}: dropped {dropped} of {n}, expected {mean} ± {sd}");
    }
}

#[test]
fn dropped_fraction_is_binomial_f32() {
    dropped_fraction_is_binomial::<f32>();
}

#[test]
fn dropped_fraction_is_binomial_f64() {
    dropped_fraction_is_binomial::<f64>();
}

fn expectation_is_preserved<T: Float>() {
    let n = 200_000;
    let xt = nonzero::<T>(n, 4);
    let x = Var::parameter(xt.clone());
    let xs: Vec<f64> = xt.to_vec().into_iter().map(T::to_f64).collect();
    let mut gen = Generator::new(5);
    for p in [0.1, 0.5, 0.9] {
        let ys: Vec<f64> = dropout(&x, p, &mut gen).unwrap().value().to_vec().into_iter().map(T::to_f64).collect();
        let mean_x = xs.iter().sum::<f64>() / n as f64;
        let mean_y = ys.iter().sum::<f64>() / n as f64;
        // Var(y_i) = x_i² p / (1 - p), independent: sd(mean y) = sqrt(Σ x_i² p/(1-p)) / n.
        let sd = (xs.iter().map(|v| v * v).sum::<f64>() * p / (1.0 - p)).sqrt() / n as f64;
        assert!((mean_y - mean_x).abs() < 5.0 * sd, "p = {p}: mean y {mean_y}, mean x {mean_x}, sd {sd}");
    }
}

#[test]
fn expectation_is_preserved_f32() {
    expectation_is_preserved::<f32>();
}

#[test]
fn expectation_is_preserved_f64() {
    expectation_is_preserved::<f64>();
}

fn kept_values_are_scaled_exactly<T: Float>() {
    let n = 10_000;
    let xt = nonzero::<T>(n, 6);
    let x = Var::parameter(xt.clone());
    let mut gen = Generator::new(7);
    for p in [0.1, 0.3, 0.5, 0.9] {
        let y = dropout(&x, p, &mut gen).unwrap();
        let rec = record(&y);
        assert_eq!((rec.p, rec.numel), (p, n));
        let scale = T::from_f64(1.0 / (1.0 - p));
        for (i, (&xi, &yi)) in xt.to_vec().iter().zip(&y.value().to_vec()).enumerate() {
            if rec.kept(i) {
                // Exactly x * (1 / (1 - p)), as PyTorch's fused kernel, within an ulp of x / (1 - p).
                assert_eq!(yi, xi * scale, "p = {p}, element {i}");
                let exact = xi.to_f64() / (1.0 - p);
                assert!((yi.to_f64() - exact).abs() <= 2.0 * T::EPSILON.to_f64() * exact, "p = {p}, element {i}");
            } else {
                assert_eq!(yi, T::ZERO, "p = {p}, element {i}");
            }
        }
    }
}

#[test]
fn kept_values_are_scaled_exactly_f32() {
    kept_values_are_scaled_exactly::<f32>();
}

#[test]
fn kept_values_are_scaled_exactly_f64() {
    kept_values_are_scaled_exactly::<f64>();
}

// ─── backward uses the recorded mask ────────────────────────────────────────────────────────────

fn backward_reuses_the_recorded_mask<T: Float>() {
    let n = 5_000;
    let p = 0.4;
    let x = Var::parameter(nonzero::<T>(n, 8));
    let dy = Tensor::<T>::randn(&[n], &mut Generator::new(9));
    let mut gen = Generator::new(10);
    let y = dropout(&x, p, &mut gen).unwrap();
    let rec = record(&y);

    // A second draw from the same generator between forward and backward: a different mask.
    let other = record(&dropout(&x, p, &mut gen).unwrap());
    assert_ne!(other.mask_words(), rec.mask_words(), "the second draw must differ for this test to mean anything");

    y.backward_with(&dy, false).unwrap();
    let dx = x.grad().unwrap().to_vec();
    let scale = T::from_f64(1.0 / (1.0 - p));
    for (i, (&g, &d)) in dx.iter().zip(&dy.to_vec()).enumerate() {
        let m = rec.kept(i);
        assert_eq!(m, rec.mask_words()[i / 64] >> (i % 64) & 1 == 1);
        let expected = if m { d * scale } else { T::ZERO };
        assert_eq!(g, expected, "element {i}: dx must be dy · mask / (1 - p) with the forward's mask");
    }
    // The forward output used the same mask.
    let yv = y.value().to_vec();
    assert!((0..n).all(|i| (yv[i] != T::ZERO) == rec.kept(i)));
}

#[test]
fn backward_reuses_the_recorded_mask_f32() {
    backward_reuses_the_recorded_mask::<f32>();
}

#[test]
fn backward_reuses_the_recorded_mask_f64() {
    backward_reuses_the_recorded_mask::<f64>();
}

// ─── seeding ────────────────────────────────────────────────────────────────────────────────────

fn seeding<T: Float>() {
    let n = 3_000;
    let x = Var::parameter(nonzero::<T>(n, 11));

    // The same seed: the same masks and outputs.
    let (mut g1, mut g2) = (Generator::new(42), Generator::new(42));
    let (a, b) = (dropout(&x, 0.5, &mut g1).unwrap(), dropout(&x, 0.5, &mut g2).unwrap());
    assert_eq!(record(&a), record(&b));
    assert_eq!(bits(&a.value()), bits(&b.value()));
    assert_eq!((record(&a).seed, record(&a).offset), (42, 0));

    // Successive calls on one generator: fresh, different masks at advancing offsets.
    let c = dropout(&x, 0.5, &mut g1).unwrap();
    assert_ne!(record(&c).mask_words(), record(&a).mask_words());
    assert!(record(&c).offset >= n as u64, "the second draw starts after the first");

    // Another seed: another mask.
    let d = dropout(&x, 0.5, &mut Generator::new(43)).unwrap();
    assert_ne!(record(&d).mask_words(), record(&a).mask_words());

    // manual_seed + Var::dropout is reproducible, and matches an explicit generator of that seed.
    // The seed is process-wide: no other test of this binary may seed meanwhile (a seed from
    // another thread would re-derive this thread's stream).
    let _only_seeder = SEEDING.lock().unwrap_or_else(|e| e.into_inner());
    manual_seed(42);
    let e1 = x.dropout(0.5).unwrap();
    let e2 = x.dropout(0.5).unwrap();
    manual_seed(42);
    let f1 = x.dropout(0.5).unwrap();
    let f2 = x.dropout(0.5).unwrap();
    assert_eq!(record(&e1), record(&f1));
    assert_eq!(record(&e2), record(&f2));
    assert_ne!(record(&e1).mask_words(), record(&e2).mask_words());
    assert_eq!(record(&e1), record(&a));
    assert_eq!(record(&e2), record(&c));

    // The mask does not depend on the element type.
    let x64 = Var::parameter(Tensor::<f64>::ones(&[n]));
    assert_eq!(record(&dropout(&x64, 0.5, &mut Generator::new(42)).unwrap()), record(&a));
}

#[test]
fn seeding_f32() {
    seeding::<f32>();
}

#[test]
fn seeding_f64() {
    seeding::<f64>();
}

// ─── thread count ───────────────────────────────────────────────────────────────────────────────

/// Forward and backward of one dropout: the record, the output's bits and the gradient's bits.
fn dropout_step<T: Float>(threads: usize) -> (DropoutRecord, Vec<u64>, Vec<u64>) {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        let x = Var::parameter(nonzero::<T>(MULTI_CHUNK, 12));
        let dy = Tensor::<T>::randn(&[MULTI_CHUNK], &mut Generator::new(13));
        let mut gen = Generator::new(14);
        let _warm = dropout(&x, 0.3, &mut gen).unwrap(); // a non-zero offset for the draw below
        let y = dropout(&x, 0.3, &mut gen).unwrap();
        let rec = record(&y); // read before backward frees the entry
        y.backward_with(&dy, false).unwrap();
        (rec, bits(&y.value()), bits(&x.grad().unwrap()))
    })
}

fn identical_on_1_and_2_threads<T: Float>() {
    assert_ne!(MULTI_CHUNK % 64, 0);
    let one = dropout_step::<T>(1);
    let two = dropout_step::<T>(2);
    assert_eq!(one.0, two.0, "masks differ between 1 and 2 threads");
    assert_eq!(one.1, two.1, "outputs differ between 1 and 2 threads");
    assert_eq!(one.2, two.2, "gradients differ between 1 and 2 threads");
    // Regenerating on either thread count gives the same mask again.
    let rec = &one.0;
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let again = pool.install(|| DropoutRecord::regenerate(rec.seed, rec.offset, rec.p, rec.numel));
        assert_eq!(&again.unwrap(), rec);
    }
    // The tail word holds exactly the tail's bits.
    let tail = MULTI_CHUNK % 64;
    assert_eq!(rec.mask_words().last().unwrap() >> tail, 0);
    assert!(!rec.kept(MULTI_CHUNK));
}

#[test]
fn identical_on_1_and_2_threads_f32() {
    identical_on_1_and_2_threads::<f32>();
}

#[test]
fn identical_on_1_and_2_threads_f64() {
    identical_on_1_and_2_threads::<f64>();
}

// ─── mask memory ────────────────────────────────────────────────────────────────────────────────

fn mask_takes_one_bit_per_element<T: Float>() {
    let mut gen = Generator::new(15);
    for numel in [1, 63, 64, 65, 1000, MULTI_CHUNK] {
        let x = Var::parameter(Tensor::<T>::ones(&[numel]));
        let y = dropout(&x, 0.5, &mut gen).unwrap();
        let rec = record(&y);
        assert_eq!(rec.mask_bytes(), numel.div_ceil(64) * 8, "numel {numel}");
        assert_eq!(rec.mask_words().len(), numel.div_ceil(64));
        let tape = y.tape();
        assert_eq!(tape.len(), 1);
        assert_eq!(tape[0].saved_bytes, rec.mask_bytes(), "dropout saves only its mask");
    }
    // A million elements keep 128 KiB: numel / 8 bytes.
    let numel = 1 << 20;
    let x = Var::parameter(Tensor::<T>::ones(&[1024, 1024]));
    let y = dropout(&x, 0.5, &mut gen).unwrap();
    assert_eq!(y.tape()[0].saved_bytes, numel / 8);
    assert_eq!(y.tape()[0].saved_bytes, 131_072);
    assert_eq!(y.tape()[0].shape, vec![1024, 1024]);
}

#[test]
fn mask_takes_one_bit_per_element_f32() {
    mask_takes_one_bit_per_element::<f32>();
}

#[test]
fn mask_takes_one_bit_per_element_f64() {
    mask_takes_one_bit_per_element::<f64>();
}

// ─── replay ─────────────────────────────────────────────────────────────────────────────────────

struct Step {
    loss: Vec<u64>,
    grads: Vec<Vec<u64>>,
    records: Vec<DropoutRecord>,
}

/// An MLP-like step: relu(x @ w1) → dropout → @ w2 → dropout → sum, then backward. Parameters
/// from `init_seed`, masks from `drop_seed`.
fn mlp_step<T: Float>(init_seed: u64, drop_seed: u64) -> Step {
    let mut init = Generator::new(init_seed);
    let x = Var::new(Tensor::<T>::randn(&[8, 16], &mut init));
    let w1 = Var::parameter(Tensor::<T>::randn(&[16, 32], &mut init));
    let w2 = Var::parameter(Tensor::<T>::randn(&[32, 4], &mut init));
    let mut gen = Generator::new(drop_seed);
    let h = dropout(&x.matmul(&w1).unwrap().relu(), 0.5, &mut gen).unwrap();
    let out = dropout(&h.matmul(&w2).unwrap(), 0.2, &mut gen).unwrap();
    let loss = out.sum_all();
    let records = loss.tape().into_iter().filter_map(|e| e.dropout).collect();
    loss.backward().unwrap();
    Step { loss: bits(&loss.value()), grads: vec![bits(&w1.grad().unwrap()), bits(&w2.grad().unwrap())], records }
}

fn replay_is_bit_identical<T: Float>() {
    let a = mlp_step::<T>(1, 100);
    let b = mlp_step::<T>(1, 100);
    assert_eq!(a.loss, b.loss);
    assert_eq!(a.grads, b.grads);
    assert_eq!(a.records, b.records);
    assert_eq!(a.records.len(), 2);
    // Each stored mask is what (seed, offset, p, numel) regenerates.
    for rec in &a.records {
        assert_eq!(rec.seed, 100);
        assert_eq!(&DropoutRecord::regenerate(rec.seed, rec.offset, rec.p, rec.numel).unwrap(), rec);
    }
    assert_ne!(a.records[0].offset, a.records[1].offset);
    // Another dropout seed changes the step (so the comparison above is not vacuous).
    let c = mlp_step::<T>(1, 101);
    assert_ne!(a.grads, c.grads);
}

#[test]
fn replay_is_bit_identical_f32() {
    replay_is_bit_identical::<f32>();
}

#[test]
fn replay_is_bit_identical_f64() {
    replay_is_bit_identical::<f64>();
}

// ─── layouts ────────────────────────────────────────────────────────────────────────────────────

fn non_contiguous_input<T: Float>() {
    // The mask applies in logical (row-major) order, whatever the input's layout.
    let base = Var::parameter(Tensor::<T>::randn(&[37, 70], &mut Generator::new(16)));
    let xt = base.t().unwrap();
    let xc = xt.contiguous();
    let a = dropout(&xt, 0.5, &mut Generator::new(17)).unwrap();
    let b = dropout(&xc, 0.5, &mut Generator::new(17)).unwrap();
    assert_eq!(a.shape(), vec![70, 37]);
    assert_eq!(bits(&a.value()), bits(&b.value()));
    // The gradient flows back through the transpose to the base's layout.
    let rec = record(&a); // read before backward frees the entry
    let dy = Tensor::<T>::randn(&[70, 37], &mut Generator::new(18));
    a.backward_with(&dy, false).unwrap();
    let g = base.grad().unwrap();
    assert_eq!(g.shape(), &[37, 70]);
    let scale = T::from_f64(1.0 / (1.0 - 0.5));
    let (g, dy) = (g.to_vec(), dy.to_vec());
    for r in 0..70 {
        for c in 0..37 {
            let expected = if rec.kept(r * 37 + c) { dy[r * 37 + c] * scale } else { T::ZERO };
            assert_eq!(g[c * 70 + r], expected);
        }
    }
}

#[test]
fn non_contiguous_input_f32() {
    non_contiguous_input::<f32>();
}

#[test]
fn non_contiguous_input_f64() {
    non_contiguous_input::<f64>();
}

fn dropped_elements_are_multiplied_by_zero<T: Float>() {
    // As PyTorch (`x * mask`): a dropped element is `x * 0`, so NaN and infinite inputs give NaN
    // whether kept or dropped, and a dropped negative one is -0; kept ones are `x / (1 - p)`. The
    // gradient is `dy * mask / (1 - p)`: a NaN upstream gradient stays NaN everywhere.
    let n = 640;
    let values: Vec<T> = (0..n).map(|i| [T::NAN, T::INFINITY, T::NEG_INFINITY, -T::ONE][i % 4]).collect();
    let x = Var::parameter(Tensor::from_vec(values.clone(), &[n]).unwrap());
    let y = dropout(&x, 0.5, &mut Generator::new(19)).unwrap();
    let rec = record(&y);
    let scale = T::from_f64(2.0);
    for (i, &v) in y.value().to_vec().iter().enumerate() {
        let factor = if rec.kept(i) { scale } else { T::ZERO };
        assert_eq!(v.to_f64().to_bits(), (values[i] * factor).to_f64().to_bits(), "element {i}");
        if !rec.kept(i) {
            assert_eq!(v.is_nan(), i % 4 != 3, "element {i}: a dropped NaN or infinity gives NaN");
        }
    }
    assert!(rec.kept_count() > 0 && rec.kept_count() < n);
    let upstream = Tensor::from_vec(vec![T::NAN; n], &[n]).unwrap();
    y.backward_with(&upstream, false).unwrap();
    assert!(x.grad().unwrap().to_vec().iter().all(|g| g.is_nan()), "a NaN gradient stays NaN, dropped or kept");
}

#[test]
fn dropped_elements_are_multiplied_by_zero_f32() {
    dropped_elements_are_multiplied_by_zero::<f32>();
}

#[test]
fn dropped_elements_are_multiplied_by_zero_f64() {
    dropped_elements_are_multiplied_by_zero::<f64>();
}

fn p_one_gives_zeros_and_zero_gradients<T: Float>() {
    // As PyTorch: `p = 1` drops everything (`x * 0`), and the gradient is zero.
    let x = Var::parameter(nonzero::<T>(300, 4));
    let y = dropout(&x, 1.0, &mut Generator::new(0)).unwrap();
    assert!(y.value().to_vec().iter().all(|&v| v == T::ZERO));
    assert_eq!(record(&y).kept_count(), 0);
    y.sum_all().backward().unwrap();
    assert!(x.grad().unwrap().to_vec().iter().all(|&g| g == T::ZERO));
    let nan = Var::new(Tensor::from_vec(vec![T::NAN; 3], &[3]).unwrap());
    assert!(dropout(&nan, 1.0, &mut Generator::new(0)).unwrap().value().to_vec().iter().all(|v| v.is_nan()));
}

#[test]
fn p_one_gives_zeros_and_zero_gradients_f32() {
    p_one_gives_zeros_and_zero_gradients::<f32>();
}

#[test]
fn p_one_gives_zeros_and_zero_gradients_f64() {
    p_one_gives_zeros_and_zero_gradients::<f64>();
}
