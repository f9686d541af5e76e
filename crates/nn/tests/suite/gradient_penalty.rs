//! The WGAN-GP gradient penalty (Gulrajani et al., 2017) against PyTorch: the golden crate's
//! `gradient_penalty.json`, written by `benches/peers/gradient_penalty.py` (float64). For an MLP
//! critic with LayerNorm and a causal self-attention critic: the per-sample norms
//! `‖∂D(x̂)/∂x̂‖`, the penalty `λ · mean (‖∂D(x̂)/∂x̂‖ − 1)²`, its gradient with respect to every
//! parameter (a double backward: `grad` with `create_graph`, then `backward`), and five Adam steps
//! of the critic's loss `mean D(fake) − mean D(real) + penalty` (losses, penalties, Wasserstein
//! estimates per step, and the weights after), in f64 and f32.

use serde_json::Value;
use tapegrad_autograd::{fused, grad, GradOptions};
use tapegrad_nn::dtype::*;
use tapegrad_nn::optim::{Adam, Optimizer};
use tapegrad_nn::{LayerNorm, Linear, Module, Result, Sequential, Tanh, Var};
use tapegrad_tensor::{Float, Generator, Tensor};

use golden::{assert_close, tensor};
use tapegrad_golden as golden;

/// The script's attention critic: a tanh embedding, single-head causal self-attention over the
/// points of a set, tanh, the mean over the set, a linear read-out.
#[derive(Module)]
struct AttentionCritic<T: Float> {
    embed: Linear<T>,
    query: Linear<T>,
    key: Linear<T>,
    value: Linear<T>,
    out: Linear<T>,
    /// `-inf` above the diagonal: point `i` attends to points `0..=i`.
    #[module(skip)]
    mask: Tensor<T>,
}

impl<T: Float> AttentionCritic<T> {
    fn new(width: usize, points: usize, gen: &mut Generator) -> AttentionCritic<T> {
        let mask = (0..points * points).map(|ij| if ij % points > ij / points { T::NEG_INFINITY } else { T::ZERO });
        AttentionCritic {
            embed: Linear::<T>::new(2, width, gen),
            query: Linear::<T>::new(width, width, gen),
            key: Linear::<T>::new(width, width, gen),
            value: Linear::<T>::new(width, width, gen),
            out: Linear::<T>::new(width, 1, gen),
            mask: Tensor::from_vec(mask.collect(), &[points, points]).expect("a square mask"),
        }
    }
}

impl<T: Float> Module<T> for AttentionCritic<T> {
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        let h = self.embed.forward(x)?.tanh();
        let (q, k, v) = (self.query.forward(&h)?, self.key.forward(&h)?, self.value.forward(&h)?);
        // p = 0: the generator is not drawn from.
        let a = fused::scaled_dot_product_attention(&q, &k, &v, Some(&self.mask), 0.0, None, &mut Generator::new(0))?;
        self.out.forward(&a.tanh().mean(&[1], false)?)
    }
}

/// The case's critic with PyTorch's initial weights, written in by name.
fn golden_critic<T: Float>(case: &Value) -> Box<dyn Module<T>> {
    let gen = &mut Generator::new(0);
    let critic: Box<dyn Module<T>> = match case["kind"].as_str().unwrap() {
        "mlp" => Box::new(
            Sequential::<T>::new()
                .add(Linear::<T>::new(2, 16, gen))
                .add(LayerNorm::<T>::new(&[16]))
                .add(Tanh::<T>::new())
                .add(Linear::<T>::new(16, 16, gen))
                .add(Tanh::<T>::new())
                .add(Linear::<T>::new(16, 1, gen)),
        ),
        _ => Box::new(AttentionCritic::<T>::new(8, case["inputs"]["real"]["shape"][1].as_u64().unwrap() as usize, gen)),
    };
    let theirs = case["parameters"].as_object().unwrap();
    let ours = critic.named_parameters();
    assert_eq!(ours.len(), theirs.len(), "{}: parameter count", case["name"]);
    for (name, p) in &ours {
        let value: Tensor<T> = tensor(&theirs[name.as_str()]);
        assert_eq!(p.shape(), value.shape(), "{name}: shape as PyTorch's");
        p.set_value(value);
    }
    critic
}

/// `‖∂D(x̂)/∂x̂_i‖₂` per sample `i` of the interpolates `x̂ = ε real + (1 − ε) fake`, recorded
/// (`create_graph`) so that it can be differentiated with respect to the critic's parameters.
fn grad_norms<T: Float>(critic: &dyn Module<T>, real: &Tensor<T>, fake: &Tensor<T>, eps: &Tensor<T>) -> Result<Var<T>> {
    let x_hat = Var::parameter(eps.mul(real)?.add(&eps.neg().add_scalar(T::ONE).mul(fake)?)?);
    let create = GradOptions { create_graph: true, ..GradOptions::default() };
    let dx = grad(&[&critic.forward(&x_hat)?.sum_all()], &[&x_hat], None, create)?.remove(0).expect("D depends on x");
    let n = real.shape()[0];
    let flat = dx.reshape(&[n, real.numel() / n])?;
    Ok(flat.mul(&flat)?.sum(&[1], false)?.sqrt())
}

/// `λ · mean_i (‖∂D(x̂)/∂x̂_i‖ − 1)²`, and the norms.
fn penalty<T: Float>(
    critic: &dyn Module<T>,
    [real, fake, eps]: &[Tensor<T>; 3],
    lambda: f64,
) -> Result<(Var<T>, Var<T>)> {
    let norms = grad_norms(critic, real, fake, eps)?;
    let gap = norms.add_scalar(-T::ONE);
    Ok((gap.mul(&gap)?.mean_all().mul_scalar(T::from_f64(lambda)), norms))
}

/// Everything the case records, against PyTorch's values within `tol` relative, but the trained
/// values of the parameters named in `noise_trained`.
fn check_case<T: Float>(case: &Value, tol: f64, noise_trained: &[&str]) -> Result<()> {
    let name = case["name"].as_str().unwrap();
    let critic = golden_critic::<T>(case);
    let data: [Tensor<T>; 3] = ["real", "fake", "eps"].map(|k| tensor(&case["inputs"][k]));
    let args = &case["args"];
    let arg = |k: &str| args[k].as_f64().unwrap();
    let lambda = arg("lambda");

    let (gp, norms) = penalty(critic.as_ref(), &data, lambda)?;
    assert_close(&format!("{name}: gradient norms"), &norms.value(), &case["grad_norms"], tol);
    assert_close(&format!("{name}: penalty"), &gp.value(), &case["penalty"], tol);
    let params = critic.named_parameters();
    let refs: Vec<&Var<T>> = params.iter().map(|(_, p)| p).collect();
    let plain = GradOptions { allow_unused: true, ..GradOptions::default() };
    let grads = grad(&[&gp], &refs, None, plain)?;
    let mut unused = 0;
    for ((p, var), g) in params.iter().zip(grads) {
        // The penalty does not depend on the output layer's bias (it moves D, not its gradient):
        // none here, zeros in PyTorch's file.
        let g = g.map(|g| g.value()).unwrap_or_else(|| {
            unused += 1;
            Tensor::<T>::zeros(&var.shape())
        });
        assert_close(&format!("{name}: d penalty / d {p}"), &g, &case["grads"][p.as_str()], tol);
    }
    assert_eq!(unused, 1, "{name}: only the output bias is unused");

    let betas = args["betas"].as_array().unwrap();
    let mut opt =
        Adam::new(critic.parameters(), arg("lr")).betas(betas[0].as_f64().unwrap(), betas[1].as_f64().unwrap());
    let steps = args["steps"].as_u64().unwrap() as usize;
    let (mut losses, mut penalties, mut wasserstein) = (vec![], vec![], vec![]);
    for _ in 0..steps {
        let d_real = critic.forward(&Var::new(data[0].clone()))?.mean_all();
        let d_fake = critic.forward(&Var::new(data[1].clone()))?.mean_all();
        let (gp, _) = penalty(critic.as_ref(), &data, lambda)?;
        let loss = d_fake.sub(&d_real)?.add(&gp)?;
        opt.zero_grad();
        loss.backward()?;
        opt.step()?;
        losses.push(loss.value().item()?);
        penalties.push(gp.value().item()?);
        wasserstein.push(d_real.value().item()? - d_fake.value().item()?);
    }
    for (what, ours) in [("losses", losses), ("penalties", penalties), ("wasserstein", wasserstein)] {
        assert_close(&format!("{name}: {what} per step"), &Tensor::from_vec(ours, &[steps])?, &case[what], tol);
    }
    for (p, var) in critic.named_parameters() {
        if noise_trained.contains(&p.as_str()) {
            continue;
        }
        assert_close(
            &format!("{name}: {p} after {steps} steps"),
            &var.value(),
            &case["parameters_after"][p.as_str()],
            tol,
        );
    }
    Ok(())
}

#[test]
fn gradient_penalty_matches_pytorch_in_f64() -> Result<()> {
    let cases = golden::cases("gradient_penalty.json");
    assert_eq!(cases.len(), 2);
    for case in &cases {
        check_case::<f64>(case, 1e-10, &[])?;
    }
    Ok(())
}

#[test]
fn gradient_penalty_matches_pytorch_in_f32() -> Result<()> {
    // The key's bias adds `q · b_k` to every score of a query's row, which softmax ignores: its
    // gradient is zero but for rounding (checked above, like every gradient), and Adam's
    // normalised step turns that rounding noise into steps of about ±lr. PyTorch and tapegrad
    // round alike in f64 (the test above compares it too); in f32 the trained value is noise.
    for case in &golden::cases("gradient_penalty.json") {
        check_case::<f32>(case, 1e-5, &["key.bias"])?;
    }
    Ok(())
}
