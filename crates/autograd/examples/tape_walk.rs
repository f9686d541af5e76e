//! A fixed workload for counting the instructions of the plain `backward()` walk under
//! `valgrind --tool=callgrind` (instruction counts repeat from run to run where wall-clock time
//! on a shared machine does not): the tape bench's chain of 100 small ops (`add`, `mul`, `relu`,
//! `mul_scalar` on 16-element values), then a small MLP step (`matmul`, `relu`, `log_softmax`),
//! each forward + backward, `ROUNDS` times.
//!
//! Run: `cargo build --release -p tapegrad-autograd --example tape_walk` then
//! `valgrind --tool=callgrind target/release/examples/tape_walk`.

use tapegrad_autograd::{Result, Var};
use tapegrad_tensor::{Generator, Tensor};

const ROUNDS: usize = 200;

fn chain(w: &Var, c: &Var) -> Result<Var> {
    let mut y = w.clone();
    for i in 0..100 {
        y = match i % 4 {
            0 => y.add(c)?,
            1 => y.mul(c)?,
            2 => y.relu(),
            _ => y.mul_scalar(0.5),
        };
    }
    Ok(y)
}

fn main() -> Result<()> {
    let mut gen = Generator::new(0);
    let w = Var::parameter(Tensor::<f32>::randn(&[16], &mut gen));
    let c = Var::new(Tensor::<f32>::rand(&[16], &mut gen).add_scalar(0.5));
    let x = Var::new(Tensor::<f32>::randn(&[32, 64], &mut gen));
    let w1 = Var::parameter(Tensor::<f32>::randn(&[64, 64], &mut gen));
    let w2 = Var::parameter(Tensor::<f32>::randn(&[64, 10], &mut gen));
    let mut total = 0.0;
    for _ in 0..ROUNDS {
        chain(&w, &c)?.sum_all().backward()?;
        let loss = x.matmul(&w1)?.relu().matmul(&w2)?.log_softmax(1)?.mean_all().neg();
        loss.backward()?;
        total += w.grad().map_or(0.0, |g| g.to_vec()[0]) + w1.grad().map_or(0.0, |g| g.to_vec()[0]);
        for p in [&w, &w1, &w2] {
            p.zero_grad();
        }
    }
    println!("checksum {total}");
    Ok(())
}
