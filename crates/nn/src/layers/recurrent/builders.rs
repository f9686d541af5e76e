//! The builder methods and accessors that `LSTM` and `GRU` share, written once as a macro
//! (each layer's docs and examples then name that layer).

/// The builder methods and accessors both layers share, written once for each.
macro_rules! recurrent_common {
    ($name:ident) => {
        impl<T: Float> $name<T> {
            /// Reads and returns `[batch, seq_len, features]` (`true`) instead of
            /// `[seq_len, batch, features]` (`false`, the default, as in PyTorch). The states
            /// `h0`, `h_n` (and `c0`, `c_n`) are `[num_layers, batch, hidden_size]` either way.
            ///
            /// ```
            #[doc = concat!("use tapegrad_nn::{", stringify!($name), ", Module, Var};")]
            /// use tapegrad_tensor::{Generator, Tensor};
            #[doc = concat!("let m: ", stringify!($name), " = ", stringify!($name), "::new(3, 4, 2, &mut Generator::new(0))?")]
            ///     .batch_first(true);
            /// let y = m.forward(&Var::new(Tensor::zeros(&[2, 5, 3])))?; // [batch, seq_len, input]
            /// assert_eq!(y.shape(), vec![2, 5, 4]);
            /// # Ok::<(), tapegrad_nn::Error>(())
            /// ```
            pub fn batch_first(mut self, batch_first: bool) -> Self {
                self.core.batch_first = batch_first;
                self
            }

            /// PyTorch's `dropout`: elementwise dropout with probability `p` on the outputs of
            /// every layer except the last (so it does nothing with one layer), fresh at every
            /// step; only while training (or Monte Carlo dropout).
            ///
            /// # Errors
            /// `dropout` when `p` is outside [0, 1] or NaN.
            ///
            /// ```
            #[doc = concat!("use tapegrad_nn::{", stringify!($name), ", Module, Var};")]
            /// use tapegrad_tensor::{Generator, Tensor};
            #[doc = concat!("let m: ", stringify!($name), " = ", stringify!($name), "::new(3, 4, 2, &mut Generator::new(0))?")]
            ///     .dropout(0.2)?;
            /// assert_eq!(m.dropout_rates().0, 0.2);
            /// assert!(m.to_string().ends_with("dropout=0.2)"));
            /// # Ok::<(), tapegrad_nn::Error>(())
            /// ```
            pub fn dropout(mut self, p: f64) -> Result<Self> {
                self.core.dropout.set_p(p)?;
                Ok(self)
            }

            /// Variational dropout on the input sequence: one mask per batch element and input
            /// feature, the same at every time step (Gal and Ghahramani, 2016).
            ///
            /// # Errors
            /// `dropout_shared` when `p` is outside [0, 1] or NaN.
            ///
            /// ```
            #[doc = concat!("use tapegrad_nn::{", stringify!($name), ", Module, Var};")]
            /// use tapegrad_tensor::{Generator, Tensor};
            #[doc = concat!("let m: ", stringify!($name), " = ", stringify!($name), "::new(3, 4, 2, &mut Generator::new(0))?")]
            ///     .input_dropout(0.1)?;
            /// assert_eq!(m.dropout_rates().1, 0.1);
            /// # Ok::<(), tapegrad_nn::Error>(())
            /// ```
            pub fn input_dropout(mut self, p: f64) -> Result<Self> {
                self.core.input_dropout.set_p(p)?;
                Ok(self)
            }

            /// Variational dropout on the recurrent state: in every layer, one mask per batch
            /// element and hidden unit multiplies `h_{t-1}` before the hidden-to-hidden product
            /// at every step of the sequence (Gal and Ghahramani, 2016).
            ///
            /// # Errors
            /// `dropout` when `p` is outside [0, 1] or NaN.
            ///
            /// ```
            #[doc = concat!("use tapegrad_nn::{", stringify!($name), ", Module, Var};")]
            /// use tapegrad_tensor::{Generator, Tensor};
            #[doc = concat!("let m: ", stringify!($name), " = ", stringify!($name), "::new(3, 4, 2, &mut Generator::new(0))?")]
            ///     .recurrent_dropout(0.25)?;
            /// assert_eq!(m.dropout_rates().2, 0.25);
            /// # Ok::<(), tapegrad_nn::Error>(())
            /// ```
            pub fn recurrent_dropout(mut self, p: f64) -> Result<Self> {
                self.core.recurrent_dropout.set_p(p)?;
                Ok(self)
            }

            /// Variational dropout on the output sequence: one mask per batch element and
            /// hidden unit, the same at every time step. `h_n` (and `c_n`) are not dropped.
            ///
            /// # Errors
            /// `dropout_shared` when `p` is outside [0, 1] or NaN.
            ///
            /// ```
            #[doc = concat!("use tapegrad_nn::{", stringify!($name), ", Module, Var};")]
            /// use tapegrad_tensor::{Generator, Tensor};
            #[doc = concat!("let m: ", stringify!($name), " = ", stringify!($name), "::new(3, 4, 2, &mut Generator::new(0))?")]
            ///     .output_dropout(0.25)?;
            /// assert_eq!(m.dropout_rates().3, 0.25);
            /// # Ok::<(), tapegrad_nn::Error>(())
            /// ```
            pub fn output_dropout(mut self, p: f64) -> Result<Self> {
                self.core.output_dropout.set_p(p)?;
                Ok(self)
            }

            /// Gives the dropouts their own generators, seeded `seed` (between layers),
            /// `seed + 1` (input), `seed + 2` (recurrent) and `seed + 3` (output), instead of
            /// the thread's default generator: reproducible masks independent of other draws.
            ///
            /// ```
            #[doc = concat!("use tapegrad_nn::{", stringify!($name), ", Module, Var};")]
            /// use tapegrad_tensor::{Generator, Tensor};
            #[doc = concat!("let m: ", stringify!($name), " = ", stringify!($name), "::new(3, 4, 2, &mut Generator::new(0))?")]
            ///     .output_dropout(0.5)?
            ///     .with_seed(7);
            /// let x = Var::new(Tensor::ones(&[5, 2, 3]));
            /// assert_eq!(m.forward(&x)?.value().shape(), &[5, 2, 4]); // masks from seeds 7..=10
            /// # Ok::<(), tapegrad_nn::Error>(())
            /// ```
            pub fn with_seed(mut self, seed: u64) -> Self {
                self.core = self.core.with_seed(seed);
                self
            }

            /// The input feature count.
            ///
            /// ```
            #[doc = concat!("use tapegrad_nn::{", stringify!($name), ", Module, Var};")]
            /// use tapegrad_tensor::{Generator, Tensor};
            #[doc = concat!("let m: ", stringify!($name), " = ", stringify!($name), "::new(3, 4, 2, &mut Generator::new(0))?")]
            /// ;
            /// assert_eq!(m.input_size(), 3);
            /// # Ok::<(), tapegrad_nn::Error>(())
            /// ```
            pub fn input_size(&self) -> usize {
                self.core.input_size
            }

            /// The hidden state width.
            ///
            /// ```
            #[doc = concat!("use tapegrad_nn::{", stringify!($name), ", Module, Var};")]
            /// use tapegrad_tensor::{Generator, Tensor};
            #[doc = concat!("let m: ", stringify!($name), " = ", stringify!($name), "::new(3, 4, 2, &mut Generator::new(0))?")]
            /// ;
            /// assert_eq!(m.hidden_size(), 4);
            /// # Ok::<(), tapegrad_nn::Error>(())
            /// ```
            pub fn hidden_size(&self) -> usize {
                self.core.hidden_size
            }

            /// The number of stacked layers.
            ///
            /// ```
            #[doc = concat!("use tapegrad_nn::{", stringify!($name), ", Module, Var};")]
            /// use tapegrad_tensor::{Generator, Tensor};
            #[doc = concat!("let m: ", stringify!($name), " = ", stringify!($name), "::new(3, 4, 2, &mut Generator::new(0))?")]
            /// ;
            /// assert_eq!(m.num_layers(), 2);
            /// # Ok::<(), tapegrad_nn::Error>(())
            /// ```
            pub fn num_layers(&self) -> usize {
                self.core.layers.len()
            }

            /// True when the input and output are `[batch, seq_len, features]`.
            ///
            /// ```
            #[doc = concat!("use tapegrad_nn::{", stringify!($name), ", Module, Var};")]
            /// use tapegrad_tensor::{Generator, Tensor};
            #[doc = concat!("let m: ", stringify!($name), " = ", stringify!($name), "::new(3, 4, 2, &mut Generator::new(0))?")]
            /// ;
            /// assert!(!m.is_batch_first()); // PyTorch's default
            /// # Ok::<(), tapegrad_nn::Error>(())
            /// ```
            pub fn is_batch_first(&self) -> bool {
                self.core.batch_first
            }

            /// The rates `(dropout, input_dropout, recurrent_dropout, output_dropout)`.
            ///
            /// ```
            #[doc = concat!("use tapegrad_nn::{", stringify!($name), ", Module, Var};")]
            /// use tapegrad_tensor::{Generator, Tensor};
            #[doc = concat!("let m: ", stringify!($name), " = ", stringify!($name), "::new(3, 4, 2, &mut Generator::new(0))?")]
            /// ;
            /// assert_eq!(m.dropout_rates(), (0.0, 0.0, 0.0, 0.0));
            /// # Ok::<(), tapegrad_nn::Error>(())
            /// ```
            pub fn dropout_rates(&self) -> (f64, f64, f64, f64) {
                let c = &self.core;
                (c.dropout.p(), c.input_dropout.p(), c.recurrent_dropout.p(), c.output_dropout.p())
            }

            /// The weights of each layer.
            ///
            /// ```
            #[doc = concat!("use tapegrad_nn::{", stringify!($name), ", Module, Var};")]
            /// use tapegrad_tensor::{Generator, Tensor};
            #[doc = concat!("let m: ", stringify!($name), " = ", stringify!($name), "::new(3, 4, 2, &mut Generator::new(0))?")]
            /// ;
            /// assert_eq!(m.weights().len(), 2);
            /// assert_eq!(m.weights()[1].weight_ih.shape()[1], 4); // layer 1 reads hidden_size
            /// # Ok::<(), tapegrad_nn::Error>(())
            /// ```
            pub fn weights(&self) -> &[RecurrentWeights<T>] {
                &self.core.layers
            }

            /// The weights of each layer, to replace (the forward checks their shapes).
            ///
            /// ```
            #[doc = concat!("use tapegrad_nn::{", stringify!($name), ", Module, Var};")]
            /// use tapegrad_tensor::{Generator, Tensor};
            #[doc = concat!("let m: ", stringify!($name), " = ", stringify!($name), "::new(3, 4, 2, &mut Generator::new(0))?")]
            /// ;
            /// let mut m = m;
            /// let shape = m.weights()[0].bias_hh.shape();
            /// m.weights_mut()[0].bias_hh = Var::parameter(Tensor::zeros(&shape)); // same shape: fine
            /// assert!(m.weights()[0].bias_hh.value().to_vec().iter().all(|&b| b == 0.0));
            /// # Ok::<(), tapegrad_nn::Error>(())
            /// ```
            pub fn weights_mut(&mut self) -> &mut [RecurrentWeights<T>] {
                &mut self.core.layers
            }
        }

        impl<T: Float> fmt::Display for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.core, f)
            }
        }
    };
}

pub(crate) use recurrent_common;
