//! Every name of the public API, used once, so that renaming or removing one breaks the build.

use tapegrad::nn::{self, Module as _};
use tapegrad::optim::{self, Optimizer as _};
use tapegrad::prelude::*;

#[test]
fn every_name_in_the_api_contract_exists() -> Result<()> {
    // Tensor.
    let mut gen = Generator::new(0);
    let x = Tensor::<f32>::from_vec(vec![1.0, -2.0, 3.0, -4.0, 5.0, -6.0], &[2, 3])?;
    let _ = (Tensor::<f64>::zeros(&[2]), Tensor::<f32>::ones(&[2]), Tensor::<f32>::full(&[2], 1.5));
    let _ = (Tensor::<f32>::scalar(1.0), Tensor::<f32>::arange(3), Tensor::<f32>::rand(&[2], &mut gen));
    let _ = Tensor::<f32>::randn(&[2], &mut gen);
    let _ = (x.shape(), x.strides(), x.ndim(), x.numel(), x.is_contiguous(), x.to_vec(), x.to_string());
    let _ = Tensor::<f32>::scalar(2.0).item()?;
    let v = x.reshape(&[3, 2])?.transpose(0, 1)?.t()?.permute(&[1, 0])?.narrow(0, 0, 2)?;
    let _ = v.unsqueeze(0)?.squeeze(0)?.expand(&[2, 3])?.contiguous();
    let y = x.add(&x)?.sub(&x)?.mul(&x)?.div(&x)?.maximum(&x)?;
    let _ = &(&y + &x) * &x;
    let _ = y.add_scalar(1.0).mul_scalar(2.0).abs().powf(1.5);
    let _ = (y.neg().exp(), y.abs().log(), y.abs().sqrt(), y.tanh(), y.sigmoid(), y.relu(), y.gelu());
    let _ = x.matmul(&x.t()?)?;
    let _ = (x.sum(&[0], true)?, x.sum_all(), x.mean(&[1], false)?, x.max(1, false)?, x.argmax(1)?);
    let _ = (x.softmax(1)?, x.log_softmax(1)?);
    let _ = (Tensor::cat(&[&x, &x], 0)?, Tensor::stack(&[&x, &x], 0)?, x.index_select(1, &[0, 2])?);
    let _ = x.gather(1, &[0, 1], &[2, 1])?;
    let img = Tensor::<f32>::rand(&[1, 1, 4, 4], &mut gen);
    let w = Tensor::<f32>::rand(&[2, 1, 3, 3], &mut gen);
    let _ = (img.conv2d(&w, None, 1, 1)?, img.max_pool2d(2, 2, 0)?, img.avg_pool2d(2, 2, 0)?);

    // Var and the tape.
    manual_seed(1);
    let p = Var::parameter(x.clone());
    let c = Var::new(x.clone());
    let h = tapegrad::autograd::dropout(&p.mul(&c)?, 0.5, &mut gen)?.dropout(0.1)?;
    assert!(h.tape().iter().any(|e| e.dropout.is_some()));
    h.sum_all().backward_retain()?;
    h.sum_all().backward()?;
    let _ = (p.value(), p.grad(), p.requires_grad(), p.detach());
    p.zero_grad();
    let _ = no_grad(|| p.relu());
    tapegrad::autograd::detect_anomaly(false);
    tapegrad::autograd::gradcheck(|v| Ok(v[0].tanh()), &[Tensor::<f64>::ones(&[2])])?;

    // nn.
    let mut model = nn::Sequential::<f32>::new()
        .add(nn::Linear::new(3, 4, &mut gen))
        .add(nn::ReLU::new())
        .add(nn::Dropout::new(0.5)?)
        .add(nn::Linear::new(4, 2, &mut gen));
    let _ = (model.parameters(), model.named_parameters(), model.is_training());
    model.eval();
    model.train();
    model.mc_dropout(true);
    let (_mean, _var) = nn::mc_predict(&model, &Var::new(x.clone()), 3)?;
    model.mc_dropout(false);
    let logits = model.forward(&Var::new(x.clone()))?;
    let _ = nn::loss::cross_entropy(&logits, &[0, 1])?;
    let _ = nn::loss::nll_loss(&logits.log_softmax(1)?, &[0, 1])?;
    let _ = nn::loss::mse_loss(&logits, &logits.detach())?;
    let _ = nn::loss::binary_cross_entropy_with_logits(&logits, &Var::new(Tensor::zeros(&[2, 2])))?;
    let _ = (nn::l1_penalty(&model.parameters())?, nn::l2_penalty(&model.parameters())?);
    let _ =
        nn::init::kaiming_uniform::<f32>(&[4, 3], nn::init::FanMode::FanIn, nn::init::Nonlinearity::Relu, &mut gen)?;
    let _ = nn::init::xavier_normal::<f32>(&[4, 3], 1.0, &mut gen)?;
    let _: (nn::Conv2d, nn::MaxPool2d, nn::AvgPool2d, nn::Flatten) =
        (nn::Conv2d::new(1, 2, 3, 1, 1, &mut gen), nn::MaxPool2d::new(2), nn::AvgPool2d::new(2), nn::Flatten::new());
    let _: (nn::GELU, nn::Tanh, nn::Sigmoid, nn::Dropout2d, nn::AlphaDropout) =
        (nn::GELU::new(), nn::Tanh::new(), nn::Sigmoid::new(), nn::Dropout2d::new(0.1)?, nn::AlphaDropout::new(0.1)?);
    let _: (nn::BatchNorm1d, nn::BatchNorm2d, nn::LayerNorm, nn::Embedding) = (
        nn::BatchNorm1d::new(3),
        nn::BatchNorm2d::new(3),
        nn::LayerNorm::new(&[3]),
        nn::Embedding::new(5, 3, &mut gen),
    );
    let _: nn::MultiheadAttention = nn::MultiheadAttention::new(4, 2, 0.1, &mut gen)?;
    let _: nn::TransformerEncoderLayer = nn::TransformerEncoderLayer::new(4, 2, 8, 0.1, &mut gen)?;

    // Optimisers and schedulers.
    let mut sgd = optim::Sgd::new(model.parameters(), 0.1).momentum(0.9).nesterov(true).weight_decay(1e-4);
    sgd.zero_grad();
    sgd.step()?;
    let _ = (optim::Adam::new(model.parameters(), 1e-3), optim::AdamW::new(model.parameters(), 1e-3));
    optim::max_norm_(&model.parameters(), 3.0)?;
    let _ = optim::clip_grad_norm_(&model.parameters(), 1.0)?;
    let _ = (optim::StepLr::new(3, 0.5), optim::CosineLr::new(10, 0.0));

    // Checkpoints and data.
    let path = std::env::temp_dir().join(format!("tapegrad-api-names-{}.safetensors", std::process::id()));
    nn::save(&model, &path)?;
    nn::load(&mut model, &path)?;
    let _ = std::fs::remove_file(&path);
    let idx = nn::data::read_idx(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist-10k/labels-idx1-ubyte.gz"))?;
    assert_eq!(idx.dims, vec![10000]);
    assert_eq!(nn::data::kfold(10, 5, 0)?.len(), 5);
    Ok(())
}
