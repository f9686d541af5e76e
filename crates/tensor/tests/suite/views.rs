//! Views share storage: every view op is checked for "no copy" (`shares_storage`) and for its
//! values, then chains of random views are compared with a naive index-mapping reference.

use proptest::prelude::*;
use serde_json::Value;
use tapegrad_tensor::{Float, Tensor};

use tapegrad_golden as golden_file;

/// A case of PyTorch's golden file `ops.json` (in the `tapegrad-golden` crate).
fn golden(name: &str) -> Value {
    golden_file::case("ops.json", name)
}

fn golden_tensor(v: &Value) -> Tensor<f64> {
    golden_file::tensor(v)
}

use golden_file::usizes;

// ─── naive reference: a row-major array and index maps ─────────────────────────

#[derive(Clone, Debug, PartialEq)]
struct Nd {
    shape: Vec<usize>,
    data: Vec<f64>,
}

impl Nd {
    fn from_fn(shape: &[usize], f: impl Fn(&[usize]) -> f64) -> Nd {
        let numel: usize = shape.iter().product();
        let mut data = Vec::with_capacity(numel);
        let mut idx = vec![0; shape.len()];
        for _ in 0..numel {
            data.push(f(&idx));
            for d in (0..shape.len()).rev() {
                idx[d] += 1;
                if idx[d] < shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        Nd { shape: shape.to_vec(), data }
    }

    fn at(&self, idx: &[usize]) -> f64 {
        let mut flat = 0;
        for (d, &i) in idx.iter().enumerate() {
            flat = flat * self.shape[d] + i;
        }
        self.data[flat]
    }

    fn permute(&self, dims: &[usize]) -> Nd {
        let shape: Vec<usize> = dims.iter().map(|&d| self.shape[d]).collect();
        Nd::from_fn(&shape, |o| {
            let mut i = vec![0; dims.len()];
            for (k, &d) in dims.iter().enumerate() {
                i[d] = o[k];
            }
            self.at(&i)
        })
    }

    fn transpose(&self, a: usize, b: usize) -> Nd {
        let mut dims: Vec<usize> = (0..self.shape.len()).collect();
        dims.swap(a, b);
        self.permute(&dims)
    }

    fn narrow(&self, dim: usize, start: usize, len: usize) -> Nd {
        let mut shape = self.shape.clone();
        shape[dim] = len;
        Nd::from_fn(&shape, |o| {
            let mut i = o.to_vec();
            i[dim] += start;
            self.at(&i)
        })
    }

    fn expand(&self, shape: &[usize]) -> Nd {
        let lead = shape.len() - self.shape.len();
        Nd::from_fn(shape, |o| {
            let i: Vec<usize> =
                (0..self.shape.len()).map(|d| if self.shape[d] == 1 { 0 } else { o[lead + d] }).collect();
            self.at(&i)
        })
    }

    fn with_shape(&self, shape: &[usize]) -> Nd {
        Nd { shape: shape.to_vec(), data: self.data.clone() }
    }
}

fn values<T: Float>(x: &Tensor<T>) -> Vec<f64> {
    x.to_vec().into_iter().map(Float::to_f64).collect()
}

fn seq<T: Float>(shape: &[usize]) -> Tensor<T> {
    let n: usize = shape.iter().product();
    Tensor::from_vec((0..n).map(|v| T::from_usize(v + 1)).collect(), shape).unwrap()
}

// ─── no copy, right values ─────────────────────────────────────────────────────

#[test]
fn every_view_shares_storage_and_reads_the_right_elements() {
    let x = seq::<f32>(&[2, 3, 4]);
    let r = Nd::from_fn(&[2, 3, 4], |i| (i[0] * 12 + i[1] * 4 + i[2] + 1) as f64);

    let t = x.transpose(0, 2).unwrap();
    assert!(t.shares_storage(&x));
    assert_eq!(t.shape(), &[4, 3, 2]);
    assert_eq!(values(&t), r.transpose(0, 2).data);

    let p = x.permute(&[1, 2, 0]).unwrap();
    assert!(p.shares_storage(&x));
    assert_eq!(values(&p), r.permute(&[1, 2, 0]).data);

    let n = x.narrow(2, 1, 2).unwrap();
    assert!(n.shares_storage(&x));
    assert_eq!(n.get(&[1, 2, 0]).unwrap(), 1.0 + (12 + 8 + 1) as f32);
    assert_eq!(values(&n), r.narrow(2, 1, 2).data);

    let u = x.unsqueeze(1).unwrap();
    assert!(u.shares_storage(&x));
    assert_eq!(u.shape(), &[2, 1, 3, 4]);
    let s = u.squeeze(1).unwrap();
    assert!(s.shares_storage(&x));
    assert_eq!(values(&s), r.data);

    let col = seq::<f32>(&[3, 1]);
    let e = col.expand(&[2, 3, 4]).unwrap();
    assert!(e.shares_storage(&col));
    assert_eq!(e.strides()[0], 0);
    assert_eq!(e.strides()[2], 0);
    assert_eq!(values(&e), Nd::from_fn(&[3, 1], |i| (i[0] + 1) as f64).expand(&[2, 3, 4]).data);

    let m = seq::<f32>(&[3, 5]);
    let mt = m.t().unwrap();
    assert!(mt.shares_storage(&m));
    assert_eq!(mt.get(&[4, 2]).unwrap(), m.get(&[2, 4]).unwrap());

    // A reshape the strides allow: merging dims of a contiguous tensor, or splitting the rows
    // of a narrowed one.
    let v = x.reshape(&[6, 4]).unwrap();
    assert!(v.shares_storage(&x));
    assert_eq!(values(&v), r.data);
    let rows = seq::<f32>(&[4, 6]).narrow(1, 0, 3).unwrap();
    let split = rows.reshape(&[2, 2, 3]).unwrap();
    assert!(split.shares_storage(&rows));
    assert_eq!(values(&split), values(&rows));
}

/// `contiguous` of views larger than one parallel chunk (broadcast, transposed, narrowed with
/// runs of every kind: unit stride, stride 0, other strides) gives the elements in logical
/// order, element for element what `get` reads, on 1 and 2 threads.
#[test]
fn contiguous_copies_of_large_views_read_every_element_in_order() {
    let x = seq::<f32>(&[64, 1, 96]);
    let wide = seq::<f64>(&[96, 700]);
    let views: Vec<(Tensor<f32>, &str)> = vec![
        (x.expand(&[64, 28, 96]).unwrap(), "expand"),
        (x.expand(&[64, 28, 96]).unwrap().transpose(1, 2).unwrap(), "expand, transpose"),
        (seq::<f32>(&[300, 257]).transpose(0, 1).unwrap().narrow(0, 3, 250).unwrap(), "transpose, narrow"),
    ];
    let check = |t: &Tensor<f32>, what: &str| {
        let c = t.contiguous();
        assert!(c.is_contiguous() && c.shape() == t.shape(), "{what}");
        let want: Vec<f32> = (0..t.numel())
            .map(|flat| {
                let mut index = vec![0; t.ndim()];
                let mut rest = flat;
                for d in (0..t.ndim()).rev() {
                    index[d] = rest % t.shape()[d];
                    rest /= t.shape()[d];
                }
                t.get(&index).unwrap()
            })
            .collect();
        assert_eq!(c.to_vec(), want, "{what}");
    };
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            for (t, what) in &views {
                check(t, what);
            }
            let t = wide.transpose(0, 1).unwrap();
            let c = t.contiguous();
            assert_eq!(c.to_vec(), t.to_vec(), "f64 transpose");
        });
    }
}

#[test]
fn reshape_of_a_transposed_tensor_copies_in_logical_order() {
    let x = seq::<f64>(&[3, 4]);
    let t = x.t().unwrap();
    let flat = t.reshape(&[12]).unwrap();
    assert!(!flat.shares_storage(&x));
    assert!(flat.is_contiguous());
    assert_eq!(flat.to_vec(), vec![1.0, 5.0, 9.0, 2.0, 6.0, 10.0, 3.0, 7.0, 11.0, 4.0, 8.0, 12.0]);
    // The original is untouched.
    assert_eq!(x.to_vec(), (1..=12).map(f64::from).collect::<Vec<_>>());
}

#[test]
fn bad_view_arguments_are_errors() {
    let x = seq::<f32>(&[2, 3]);
    assert!(x.transpose(0, 2).is_err());
    assert!(x.permute(&[0, 0]).is_err());
    assert!(x.permute(&[0]).is_err());
    assert!(x.narrow(1, 2, 2).is_err());
    assert!(x.narrow(1, usize::MAX, 2).is_err());
    assert!(x.expand(&[2, 4]).is_err());
    assert!(x.expand(&[3]).is_err());
    assert!(x.unsqueeze(3).is_err());
    assert!(x.squeeze(0).is_err());
    assert!(x.reshape(&[4]).is_err());
    assert!(x.reshape(&[usize::MAX, 2]).is_err());
    assert!(seq::<f32>(&[2, 2, 2]).t().is_err());
}

// ─── golden values (PyTorch) ───────────────────────────────────────────────────

#[test]
fn views_match_pytorch() {
    type ViewOp<'a> = &'a dyn Fn(&Tensor<f64>, &Value) -> Tensor<f64>;
    let cases: [(&str, ViewOp); 5] = [
        // The golden "contiguous op" after the transpose doubles every element.
        ("transpose(0,1) then contiguous op", &|x, _| {
            let t = x.transpose(0, 1).unwrap();
            Tensor::from_vec(t.to_vec().iter().map(|v| 2.0 * v).collect(), t.shape()).unwrap()
        }),
        ("permute [2,0,1]", &|x, a| x.permute(&usizes(&a["dims"])).unwrap()),
        ("narrow dim 1 start 1 len 2", &|x, a| {
            let u = |k: &str| a[k].as_u64().unwrap() as usize;
            x.narrow(u("dim"), u("start"), u("len")).unwrap()
        }),
        ("expand (3,1)->(3,4)", &|x, a| x.expand(&usizes(&a["shape"])).unwrap()),
        ("reshape (2,3,4)->(6,4)", &|x, a| x.reshape(&usizes(&a["shape"])).unwrap()),
    ];
    for (name, op) in cases {
        let case = golden(name);
        let x = golden_tensor(&case["inputs"]["x"]);
        let want = golden_tensor(&case["output"]);
        let got = op(&x, &case["args"]);
        assert_eq!(got.shape(), want.shape(), "{name}");
        // The JSON values are printed to ~17 digits: allow the last bit.
        for (g, w) in got.to_vec().iter().zip(want.to_vec()) {
            assert!((g - w).abs() <= 1e-12 * w.abs().max(1.0), "{name}: {g} vs {w}");
        }
    }
}

// ─── random view chains vs the reference ───────────────────────────────────────

#[derive(Clone, Debug)]
enum View {
    Transpose(usize, usize),
    Permute(Vec<usize>),
    Narrow(usize, usize, usize),
    Expand(usize, usize),
    Unsqueeze(usize),
    Squeeze,
    T,
    Reshape(usize),
}

fn view_strategy() -> impl Strategy<Value = View> {
    prop_oneof![
        (0..8usize, 0..8usize).prop_map(|(a, b)| View::Transpose(a, b)),
        Just((0..10usize).collect::<Vec<_>>()).prop_shuffle().prop_map(View::Permute),
        (0..8usize, 0..8usize, 0..8usize).prop_map(|(d, s, l)| View::Narrow(d, s, l)),
        (0..8usize, 0..4usize).prop_map(|(d, n)| View::Expand(d, n)),
        (0..8usize).prop_map(View::Unsqueeze),
        Just(View::Squeeze),
        Just(View::T),
        (0..4usize).prop_map(View::Reshape),
    ]
}

/// Applies one view to both the tensor and the reference; `None` when it does not apply to the
/// current shape. Returns whether the result must share storage with the input.
fn apply<T: Float>(x: &Tensor<T>, r: &Nd, v: &View) -> Option<(Tensor<T>, Nd, bool)> {
    let nd = r.shape.len();
    match *v {
        View::Transpose(a, b) if nd > 0 => {
            Some((x.transpose(a % nd, b % nd).unwrap(), r.transpose(a % nd, b % nd), true))
        }
        View::Permute(ref p) => {
            let dims: Vec<usize> = p.iter().copied().filter(|&d| d < nd).collect();
            Some((x.permute(&dims).unwrap(), r.permute(&dims), true))
        }
        View::Narrow(d, s, l) if nd > 0 => {
            let d = d % nd;
            let size = r.shape[d];
            let start = s % (size + 1);
            let len = l % (size - start + 1);
            Some((x.narrow(d, start, len).unwrap(), r.narrow(d, start, len), true))
        }
        View::Expand(d, n) => {
            // Grow one size-1 dim (or prepend a new dim when there is none) to n.
            let mut shape = r.shape.clone();
            match (0..nd).map(|k| (k + d) % nd).find(|&k| shape[k] == 1) {
                Some(k) => shape[k] = n,
                None => shape.insert(0, n),
            }
            Some((x.expand(&shape).unwrap(), r.expand(&shape), true))
        }
        View::Unsqueeze(d) => {
            let d = d % (nd + 1);
            let mut shape = r.shape.clone();
            shape.insert(d, 1);
            Some((x.unsqueeze(d).unwrap(), r.with_shape(&shape), true))
        }
        View::Squeeze => {
            let d = r.shape.iter().position(|&s| s == 1)?;
            let mut shape = r.shape.clone();
            shape.remove(d);
            Some((x.squeeze(d).unwrap(), r.with_shape(&shape), true))
        }
        View::T if nd <= 2 => {
            let rt = if nd == 2 { r.transpose(0, 1) } else { r.clone() };
            Some((x.t().unwrap(), rt, true))
        }
        View::Reshape(kind) => {
            let numel: usize = r.shape.iter().product();
            let shape: Vec<usize> = match kind {
                0 => vec![numel],
                1 => r.shape.iter().rev().copied().collect(),
                2 => [1].iter().chain(&r.shape).copied().collect(),
                _ if nd >= 2 => {
                    let mut s = r.shape.clone();
                    let last = s.pop().unwrap();
                    *s.last_mut().unwrap() *= last;
                    s
                }
                _ => r.shape.clone(),
            };
            let y = x.reshape(&shape).unwrap();
            // A contiguous input always reshapes without a copy.
            Some((y, r.with_shape(&shape), x.is_contiguous()))
        }
        _ => None,
    }
}

fn check_chain<T: Float>(shape: &[usize], views: &[View]) -> Result<(), TestCaseError> {
    let mut x = seq::<T>(shape);
    let mut r = Nd::from_fn(shape, |_| 0.0);
    r.data = values(&x);
    let base = x.clone();
    for v in views {
        let Some((y, ry, must_share)) = apply(&x, &r, v) else { continue };
        prop_assert_eq!(y.shape(), ry.shape.as_slice(), "{:?}", v);
        prop_assert_eq!(values(&y), ry.data.clone(), "{:?} on {:?}", v, x.shape());
        if must_share {
            prop_assert!(y.shares_storage(&x), "{:?} copied", v);
        }
        // Every element reached through the view is the one get() reads.
        if y.numel() > 0 {
            let last: Vec<usize> = y.shape().iter().map(|d| d - 1).collect();
            prop_assert_eq!(y.get(&last).unwrap().to_f64(), ry.at(&last));
        }
        x = y;
        r = ry;
    }
    // The base tensor is never written through a view.
    prop_assert_eq!(values(&base), (1..=base.numel()).map(|v| v as f64).collect::<Vec<_>>());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: crate::common::cases(128), ..ProptestConfig::default() })]

    #[test]
    fn random_view_chains_match_the_reference(
        shape in prop::collection::vec(0..4usize, 0..5),
        views in prop::collection::vec(view_strategy(), 1..6),
    ) {
        check_chain::<f32>(&shape, &views)?;
        check_chain::<f64>(&shape, &views)?;
    }
}
