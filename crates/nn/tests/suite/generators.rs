//! The walk over a model's generators: every layer that draws random numbers is reached under
//! its name (dropout layers inside attention, transformer and recurrent layers included), and
//! its generator can be listed, reseeded, saved and restored, also through a training
//! checkpoint.

use tapegrad_autograd::thread_stream_seed;
use tapegrad_golden::Scratch;
use tapegrad_nn::{
    generators_state_dict, load_generators_state_dict, AlphaDropout, DropConnect, Dropout, Dropout2d, Linear, Module,
    Result, Sequential, StateDict, TrainingCheckpoint, TransformerEncoderLayer, Var, Visit, LSTM,
};
use tapegrad_tensor::{Generator, Tensor};

#[derive(tapegrad_nn::Module)]
struct Net {
    convs: Sequential,
    encoder: TransformerEncoderLayer,
    rnn: LSTM,
    fc: DropConnect,
    extra: Vec<Dropout>,
    maybe: Option<AlphaDropout>,
    head: Linear,
}

impl Net {
    fn new() -> Result<Net> {
        let mut gen = Generator::new(0);
        Ok(Net {
            convs: Sequential::new().add(Dropout2d::new(0.5)?).add(Dropout::new(0.5)?),
            encoder: TransformerEncoderLayer::new(8, 2, 16, 0.5, &mut gen)?,
            rnn: LSTM::new(8, 8, 2, &mut gen)?.dropout(0.5)?,
            fc: DropConnect::new(8, 8, 0.5, &mut gen)?,
            extra: vec![Dropout::new(0.5)?],
            maybe: Some(AlphaDropout::new(0.5)?),
            head: Linear::new(8, 2, &mut gen),
        })
    }
}

impl Module for Net {
    /// Every random layer draws: [N, 4, 8] in, [N, 2] out.
    fn forward(&self, x: &Var) -> Result<Var> {
        let n = x.shape()[0];
        let x = self.convs.forward(&x.reshape(&[n, 1, 4, 8])?)?.reshape(&[n, 4, 8])?;
        let x = self.rnn.forward(&self.encoder.forward(&x)?)?;
        let mut x = self.fc.forward(&x.mean(&[1], false)?)?;
        for d in &self.extra {
            x = d.forward(&x)?;
        }
        if let Some(d) = &self.maybe {
            x = d.forward(&x)?;
        }
        self.head.forward(&x)
    }
}

const SLOTS: [&str; 13] = [
    "convs.0",
    "convs.1",
    "encoder.self_attn.dropout",
    "encoder.dropout",
    "encoder.dropout1",
    "encoder.dropout2",
    "rnn.dropout",
    "rnn.input_dropout",
    "rnn.recurrent_dropout",
    "rnn.output_dropout",
    "fc",
    "extra.0",
    "maybe",
];

fn input() -> Var {
    Var::new(Tensor::randn(&[3, 32], &mut Generator::new(9)))
}

fn output(net: &Net) -> Result<Vec<f32>> {
    Ok(net.forward(&input())?.value().to_vec())
}

fn names(gens: &[(String, Generator)]) -> Vec<&str> {
    gens.iter().map(|(n, _)| n.as_str()).collect()
}

#[test]
fn every_layer_that_draws_is_reached_in_order_and_seeded_apart() -> Result<()> {
    let mut net = Net::new()?;
    // Nothing owns a generator yet: every layer draws from the thread's default one.
    assert!(net.named_generators().is_empty());
    let mut slots = vec![];
    Visit::<f32>::visit_generators(&net, "", &mut |name, slot| slots.push((name.to_string(), slot.get())));
    assert_eq!(slots.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), SLOTS);
    assert!(slots.iter().all(|(_, g)| g.is_none()));

    net.seed_generators(3);
    let gens = net.named_generators();
    assert_eq!(names(&gens), SLOTS);
    let mut seeds: Vec<u64> = gens.iter().map(|(_, g)| g.seed()).collect();
    assert!(gens.iter().all(|(_, g)| g.offset() == 0));
    // Distinct from each other and from the default streams `manual_seed(3)` gives threads.
    seeds.sort_unstable();
    seeds.dedup();
    assert_eq!(seeds.len(), SLOTS.len());
    for k in 0..64 {
        assert!(!seeds.contains(&thread_stream_seed(3, k)), "thread stream {k}");
    }

    // The same seed gives the same generators, so the same masks; another seed other masks.
    let first = output(&net)?;
    assert_ne!(net.named_generators(), gens, "the forward drew from every generator");
    net.seed_generators(3);
    assert_eq!(net.named_generators(), gens);
    assert_eq!(output(&net)?, first);
    net.seed_generators(4);
    assert_ne!(output(&net)?, first);
    Ok(())
}

#[test]
fn a_seeded_model_draws_the_same_masks_on_every_thread() -> Result<()> {
    let run = || -> Result<Vec<f32>> {
        let mut net = Net::new()?;
        net.seed_generators(7);
        output(&net)
    };
    let here = run()?;
    let there = std::thread::spawn(run).join().unwrap()?;
    assert_eq!(here, there);
    Ok(())
}

#[test]
fn generators_round_trip_through_a_state_dict() -> Result<()> {
    let mut net = Net::new()?;
    net.seed_generators(5);
    output(&net)?; // generators part-way through their streams
    let state: StateDict = generators_state_dict(&net);
    assert_eq!(state.values.len(), 1 + 2 * SLOTS.len());
    assert_eq!(state.values["kind"], "generators");
    let saved = net.named_generators();
    let next = output(&net)?;

    // Into the same model, and into a fresh one whose layers drew from the default generator.
    load_generators_state_dict(&net, &state)?;
    assert_eq!(net.named_generators(), saved);
    assert_eq!(output(&net)?, next);
    let fresh = Net::new()?;
    load_generators_state_dict(&fresh, &state)?;
    assert_eq!(fresh.named_generators(), saved);
    assert_eq!(output(&fresh)?, next);
    Ok(())
}

#[test]
fn a_generator_state_that_does_not_fit_is_an_error_and_changes_nothing() -> Result<()> {
    let mut net = Net::new()?;
    net.seed_generators(5);
    let state: StateDict = generators_state_dict(&net);
    let mut target = Net::new()?;
    target.seed_generators(6);
    let before = target.named_generators();
    let refuse = |state: &StateDict, words: &[&str]| {
        let msg = load_generators_state_dict(&target, state).unwrap_err().to_string();
        assert!(msg.starts_with("load_generators_state_dict"), "{msg}");
        for w in words {
            assert!(msg.contains(w), "{msg:?} lacks {w:?}");
        }
        assert_eq!(target.named_generators(), before, "after {msg}");
    };

    // A layer that owns a generator but has none in the state.
    let mut missing = state.clone();
    missing.values.remove("encoder.dropout1.seed");
    missing.values.remove("encoder.dropout1.offset");
    refuse(&missing, &["\"encoder.dropout1\"", "own one"]);
    // An entry no layer draws from, a value that is no u64, half a generator, another kind.
    let mut unknown = state.clone();
    unknown.set("decoder.dropout.seed", 1);
    refuse(&unknown, &["unexpected", "decoder.dropout.seed"]);
    let mut bad = state.clone();
    bad.set("fc.offset", -1);
    refuse(&bad, &["\"fc.offset\"", "u64"]);
    let mut half = state.clone();
    half.values.remove("maybe.offset");
    refuse(&half, &["\"maybe.offset\""]);
    refuse(&StateDict::of_kind("model"), &["model", "generators"]);
    // A state without the layers that draw from the default generator is fine for them.
    let unseeded = Net::new()?;
    load_generators_state_dict(&unseeded, &missing)?;
    assert_eq!(unseeded.named_generators().len(), SLOTS.len() - 1);
    Ok(())
}

#[test]
fn a_training_checkpoint_holds_the_model_generators() -> Result<()> {
    let dir = Scratch::new("nn-generators", "checkpoint");
    let path = dir.path("run.safetensors");
    let mut net = Net::new()?;
    net.seed_generators(8);
    output(&net)?;
    TrainingCheckpoint::new().with_model("model", &net)?.save(&path)?;
    let next = output(&net)?;

    let ckpt = TrainingCheckpoint::load(&path)?;
    assert_eq!(ckpt.names().collect::<Vec<_>>(), ["model", "model.generators"]);
    let mut resumed = Net::new()?;
    ckpt.restore_model("model", &mut resumed)?;
    assert_eq!(output(&resumed)?, next);

    // A model without generators of its own writes no generators part.
    let plain = Net::new()?;
    let ckpt = TrainingCheckpoint::new().with_model("model", &plain)?;
    assert_eq!(ckpt.names().collect::<Vec<_>>(), ["model"]);
    // Restoring it into a model whose layers own generators would lose their streams: an
    // error, before any weight changes.
    let mut seeded = Net::new()?;
    seeded.seed_generators(1);
    seeded.head.weight.set_value(Tensor::zeros(&[2, 8]));
    let msg = ckpt.restore_model("model", &mut seeded).unwrap_err().to_string();
    assert!(msg.contains("model.generators") && msg.contains("own one"), "{msg}");
    assert!(seeded.head.weight.value().to_vec().iter().all(|&w| w == 0.0));
    Ok(())
}
