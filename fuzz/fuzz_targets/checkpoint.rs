//! Checkpoint loading on arbitrary bytes: `load_tensors` (f32 and f64) and `load` into a small
//! model must return `Ok` or `Err`, never panic or allocate what the header merely claims. When
//! something loads, it must be what the file says: every loaded tensor's data matches its shape,
//! names are unique and sorted, a loaded model holds exactly the file's values with its own
//! shapes, and a failed load leaves the model untouched.
//!
//! The readers take a path (there is no in-memory entry point), so each input is written to one
//! file per process, in `/dev/shm` when it exists to keep the file system out of the loop.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tapegrad_nn::{load, load_tensors, Error, Linear, LinearNew, Module};
use tapegrad_tensor::{Float, Generator, Tensor};

fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let shm = PathBuf::from("/dev/shm");
        let dir = if shm.is_dir() { shm } else { std::env::temp_dir() };
        dir.join(format!("tapegrad-fuzz-checkpoint-{}.safetensors", std::process::id()))
    })
}

/// Every value of every parameter, bit for bit.
fn snapshot<T: Float>(model: &Linear<T>) -> Vec<(String, Vec<usize>, Vec<u64>)> {
    model.named_parameters().into_iter().map(|(n, v)| (n, v.shape(), bits(&v.value()))).collect()
}

fn bits<T: Float>(t: &Tensor<T>) -> Vec<u64> {
    t.cast::<f64>().to_vec().iter().map(|x| x.to_bits()).collect()
}

fn check_tensors<T: Float>(loaded: &[(String, Tensor<T>)]) {
    for pair in loaded.windows(2) {
        assert!(pair[0].0 < pair[1].0, "names sorted and unique: {:?} then {:?}", pair[0].0, pair[1].0);
    }
    for (name, t) in loaded {
        assert_eq!(t.numel(), t.shape().iter().product::<usize>(), "{name}");
        assert_eq!(t.to_vec().len(), t.numel(), "{name}");
        assert!(t.shape().len() <= 64, "{name}: at most 64 dims");
    }
}

fn check_model<T: Float>(seed: u64) {
    let path = scratch();
    let mut model: Linear<T> = Linear::<T>::new(3, 2, &mut Generator::new(seed));
    let before = snapshot(&model);
    match load(&mut model, path) {
        Ok(()) => {
            // `load` converts floats (an F32 file into an f64 model), `load_tensors` reads one dtype.
            fn cast<S: Float, T: Float>(v: Vec<(String, Tensor<S>)>) -> Vec<(String, Tensor<T>)> {
                v.into_iter().map(|(n, t)| (n, t.cast::<T>())).collect()
            }
            let file = load_tensors::<T>(path)
                .ok()
                .or_else(|| load_tensors::<f32>(path).ok().map(cast))
                .or_else(|| load_tensors::<f64>(path).ok().map(cast))
                .expect("load succeeded, so the file reads as f32 or f64");
            let after = snapshot(&model);
            assert_eq!(file.len(), after.len(), "the file holds exactly the model's tensors");
            for ((name, shape, values), (_, old_shape, _)) in after.iter().zip(&before) {
                assert_eq!(shape, old_shape, "{name}: load keeps the model's shape");
                let (_, t) = file.iter().find(|(n, _)| n == name).expect("every loaded name is in the file");
                assert_eq!(values, &bits(t), "{name}: the model holds the file's values");
            }
        }
        Err(e) => {
            assert!(matches!(e, Error::Format { .. } | Error::Checkpoint { .. }), "unexpected error kind: {e:?}");
            assert_eq!(snapshot(&model), before, "a failed load changes nothing");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let path = scratch();
    std::fs::write(path, data).expect("the scratch file can be written");
    match load_tensors::<f32>(path) {
        Ok(t) => check_tensors(&t),
        Err(e) => assert!(matches!(e, Error::Format { .. }), "unexpected error kind: {e:?}"),
    }
    match load_tensors::<f64>(path) {
        Ok(t) => check_tensors(&t),
        Err(e) => assert!(matches!(e, Error::Format { .. }), "unexpected error kind: {e:?}"),
    }
    check_model::<f32>(1);
    check_model::<f64>(2);
});
