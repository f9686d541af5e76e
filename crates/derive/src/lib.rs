//! `#[derive(Module)]` for tapegrad: writes the `Visit` walk (parameters, buffers, modes, the
//! printed form) and `Display` of a model or layer struct. Used as `tapegrad::nn::Module` (or
//! `tapegrad_nn::Module`); the macro's own docs list exactly what it writes.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use proc_macro_crate::{crate_name, FoundCrate};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{parse_macro_input, Data, DeriveInput, Fields, GenericParam, Ident, Index, Member};

/// The path to the nn crate as the deriving crate sees it: `::tapegrad::nn` for users of the
/// facade, `::tapegrad_nn` inside the workspace. Both crates declare `extern crate self as ...`,
/// so the absolute path also works inside them, their examples, tests and doctests.
fn nn_path() -> TokenStream2 {
    let ident = |name: &str| Ident::new(&name.replace('-', "_"), Span::call_site());
    match crate_name("tapegrad") {
        Ok(FoundCrate::Itself) => return quote!(::tapegrad::nn),
        Ok(FoundCrate::Name(name)) => {
            let name = ident(&name);
            return quote!(::#name::nn);
        }
        Err(_) => {}
    }
    match crate_name("tapegrad-nn") {
        Ok(FoundCrate::Itself) => quote!(::tapegrad_nn),
        Ok(FoundCrate::Name(name)) => {
            let name = ident(&name);
            quote!(::#name)
        }
        Err(_) => quote!(::tapegrad::nn),
    }
}

/// What a field contributes; see `derive_module`'s docs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Child { printed: bool },
    Buffer,
    Mode,
    Flatten,
    Skip,
}

fn field_kind(attrs: &[syn::Attribute]) -> syn::Result<Kind> {
    let mut kind = None;
    for attr in attrs.iter().filter(|a| a.path().is_ident("module")) {
        attr.parse_nested_meta(|meta| {
            let this = if meta.path.is_ident("skip") {
                Kind::Skip
            } else if meta.path.is_ident("buffer") {
                Kind::Buffer
            } else if meta.path.is_ident("mode") {
                Kind::Mode
            } else if meta.path.is_ident("flatten") {
                Kind::Flatten
            } else if meta.path.is_ident("no_print") {
                Kind::Child { printed: false }
            } else {
                return Err(meta.error(
                    "expected `#[module(skip)]`, `#[module(buffer)]`, `#[module(mode)]`, \
                     `#[module(flatten)]` or `#[module(no_print)]` on a field",
                ));
            };
            if kind.replace(this).is_some() {
                return Err(meta.error("a field takes one `#[module(...)]` attribute"));
            }
            Ok(())
        })?;
    }
    Ok(kind.unwrap_or(Kind::Child { printed: true }))
}

/// Whether `ty` is plain data the derive skips without being told: a primitive number, `bool`,
/// `char`, `String`, `&str`, `PhantomData<_>`, or an `Option`, `Vec`, `Box`, array, slice or
/// tuple of those (written with these names; a type alias or a user type is not recognised, and
/// a field of such a type needs `#[module(skip)]`).
fn is_plain_data(ty: &syn::Type) -> bool {
    const PRIMITIVES: &[&str] = &[
        "bool", "char", "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize", "f32",
        "f64", "String", "str",
    ];
    match ty {
        syn::Type::Paren(p) => is_plain_data(&p.elem),
        syn::Type::Group(g) => is_plain_data(&g.elem),
        syn::Type::Array(a) => is_plain_data(&a.elem),
        syn::Type::Slice(s) => is_plain_data(&s.elem),
        syn::Type::Reference(r) => is_plain_data(&r.elem),
        syn::Type::Tuple(t) => !t.elems.is_empty() && t.elems.iter().all(is_plain_data),
        syn::Type::Path(p) if p.qself.is_none() => {
            let Some(last) = p.path.segments.last() else { return false };
            let name = last.ident.to_string();
            let args: Vec<&syn::Type> = match &last.arguments {
                syn::PathArguments::AngleBracketed(a) => a
                    .args
                    .iter()
                    .filter_map(|arg| match arg {
                        syn::GenericArgument::Type(t) => Some(t),
                        _ => None,
                    })
                    .collect(),
                _ => vec![],
            };
            match (name.as_str(), args.as_slice()) {
                ("PhantomData", _) => true,
                (name, []) => PRIMITIVES.contains(&name) && matches!(last.arguments, syn::PathArguments::None),
                ("Option" | "Vec" | "Box", [inner]) => is_plain_data(inner),
                _ => false,
            }
        }
        _ => false,
    }
}

/// The struct-level attributes: `#[module(float = f64)]`, `#[module(display = false)]`.
struct StructAttrs {
    float: Option<syn::Type>,
    display: bool,
}

fn struct_attrs(attrs: &[syn::Attribute]) -> syn::Result<StructAttrs> {
    let mut out = StructAttrs { float: None, display: true };
    for attr in attrs.iter().filter(|a| a.path().is_ident("module")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("float") {
                out.float = Some(meta.value()?.parse::<syn::Type>()?);
                Ok(())
            } else if meta.path.is_ident("display") {
                out.display = meta.value()?.parse::<syn::LitBool>()?.value;
                Ok(())
            } else {
                Err(meta.error("expected `#[module(float = T)]` or `#[module(display = false)]` on a struct"))
            }
        })?;
    }
    Ok(out)
}

/// Derives `Visit` and (unless `#[module(display = false)]`) `Display` for a struct; **not**
/// `Module`, despite the name: `forward` is always written by hand.
///
/// `Module`'s provided methods (`parameters`, `named_parameters`, `named_buffers`, `train`,
/// `eval`, `mc_dropout`, `is_training`, `zero_grad`) are built on `Visit`, so a model derives the
/// walk and implements only `forward`:
///
/// ```text
/// #[derive(Module)]
/// struct Mlp { fc1: Linear, drop: Dropout, fc2: Linear }
///
/// impl Module for Mlp {
///     fn forward(&self, x: &Var) -> Result<Var> { ... }
/// }
/// ```
///
/// The derive writes two impls:
///
/// - `impl Visit<T> for Mlp`: `visit_parameters`, `visit_buffers`, `visit_counters`,
///   `visit_generators`, `set_mode` and `visit_modes` go through the fields in declaration order, and `fmt_module` prints the tree below;
/// - `impl Display for Mlp`: `fmt_module` at indent 0, PyTorch's `print(model)`:
///
/// ```text
/// Mlp(
///   (fc1): Linear(in_features=784, out_features=256, bias=True)
///   (drop): Dropout(p=0.5)
///   (fc2): Linear(in_features=256, out_features=10, bias=True)
/// )
/// ```
///
/// # Fields
///
/// - A field without attribute is a **child**: anything that implements `Visit` (a layer, a
///   derived model, a `Var`, a `Counter`, a `GeneratorSlot`, or a `Vec`, `Option` or `Box` of
///   those). Its parameters, buffers, counters and generator slots are named under the field's name (`fc1.weight`: parameter `weight` of
///   child `fc1`; a `Var` field is one parameter named after the field, a `Counter` field one
///   integer counter, such as BatchNorm's `num_batches_tracked`; `Vec` elements are named `0`, `1`, ...; a
///   `None` contributes nothing; tuple fields are named `0`, `1`, ...). Mode changes reach it,
///   it reports its modes, and it prints as a `(name): ...` line of the tree.
/// - **Plain data** is skipped without an attribute: a field whose type is written as a
///   primitive number, `bool`, `char`, `String`, `&str`, `PhantomData<_>`, or an `Option`,
///   `Vec`, `Box`, array, slice or tuple of those (`hidden: usize`, `dims: Vec<usize>`,
///   `name: Option<String>`). The macro sees only the tokens of the type: a type alias or a
///   struct of your own is taken for a child, and if it is not one the compiler reports
///   "`...` is not a module, a parameter or a list of them" at the field, with a note to add
///   `#[module(skip)]`.
/// - `#[module(skip)]`: left out of everything (sizes, flags, `PhantomData`, your own config
///   types).
/// - `#[module(buffer)]`: a `Var` (or `Option<Var>`) of state that is saved with the model but
///   not trained, such as BatchNorm's running statistics: visited by `visit_buffers` (named
///   after the field), not by `visit_parameters`; not printed.
/// - `#[module(mode)]`: the `Mode` a layer keeps: `set_mode` applies each change to it
///   (`Mode::apply`) and `visit_modes` reports it; not printed.
/// - `#[module(flatten)]`: a child whose names are the parent's own (`weight`, not
///   `field.weight`): a newtype layer over shared state is visited as that state. Not printed.
/// - `#[module(no_print)]`: a child left out of the printed tree only (as PyTorch's
///   `MultiheadAttention` prints neither its packed projection weights nor its dropout).
///
/// # Struct attributes
///
/// - `#[module(float = T)]` (a type parameter of the struct, `f32` or `f64`): the element
///   type. The impls are then exactly `Visit<T>` and `Display` in `T`, and add no bounds on the
///   field types (a field whose type is a bare type parameter needs its `Visit<T>` bound on the
///   struct). Without it the impl is generic over every element type the fields allow,
///   `impl<F: Float> Visit<F> for Model where Field: Visit<F>, ...` (a struct of `f32` layers
///   gets `Visit<f32>`), and `Display` is written for the struct's first type parameter if it has
///   one, else for `f32`.
/// - `#[module(display = false)]`: the type keeps its own `Display` (a layer printed on one
///   line in PyTorch's style, `Linear(in_features=4, out_features=8, bias=True)`): the derive
///   writes no `Display`, and `fmt_module` prints the type's `Display`.
///
/// The generated code names the nn crate by its absolute path (`::tapegrad::nn` for users of the
/// facade, `::tapegrad_nn` inside the workspace and inside tapegrad-nn itself), found with
/// `proc-macro-crate`.
#[proc_macro_derive(Module, attributes(module))]
pub fn derive_module(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(input) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(input: DeriveInput) -> syn::Result<TokenStream2> {
    let nn = nn_path();
    let name = &input.ident;
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new_spanned(&input.ident, "#[derive(Module)] works on structs only"));
    };
    let attrs = struct_attrs(&input.attrs)?;
    let fields: Vec<&syn::Field> = match &data.fields {
        Fields::Named(f) => f.named.iter().collect(),
        Fields::Unnamed(f) => f.unnamed.iter().collect(),
        Fields::Unit => vec![],
    };

    // The element type: the one `#[module(float = T)]` names, else a fresh parameter, so that
    // the impl covers whatever the fields allow.
    let fresh = format_ident!("__TapegradFloat");
    let t = match &attrs.float {
        Some(ty) => quote!(#ty),
        None => quote!(#fresh),
    };

    let (mut params, mut buffers, mut counters, mut generators, mut set_mode, mut modes, mut prints, mut bounds) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for (i, field) in fields.into_iter().enumerate() {
        let mut kind = field_kind(&field.attrs)?;
        if kind == (Kind::Child { printed: true }) && is_plain_data(&field.ty) {
            kind = Kind::Skip;
        }
        let (member, label) = match &field.ident {
            Some(ident) => (Member::Named(ident.clone()), ident.to_string()),
            None => (Member::Unnamed(Index::from(i)), i.to_string()),
        };
        let ty = &field.ty;
        let visit = quote!(#nn::Visit::<#t>);
        match kind {
            Kind::Skip => {}
            Kind::Mode => {
                set_mode.push(quote!(#nn::Mode::apply(&mut self.#member, change);));
                modes.push(quote!(f(self.#member);));
            }
            Kind::Buffer => {
                bounds.push(quote!(#ty: #nn::Visit<#t>));
                buffers.push(quote!(#visit::visit_parameters(&self.#member, &#nn::module::join(prefix, #label), f);));
            }
            Kind::Child { .. } | Kind::Flatten => {
                // Spanned at the field's type, so that a field which is neither a module nor a
                // parameter is reported there (with `Visit`'s note suggesting `#[module(skip)]`).
                bounds.push(quote_spanned!(ty.span()=> #ty: #nn::Visit<#t>));
                // A flattened field joins the empty name: its names are the parent's.
                let label = if kind == Kind::Flatten { String::new() } else { label.clone() };
                params.push(quote!(#visit::visit_parameters(&self.#member, &#nn::module::join(prefix, #label), f);));
                buffers.push(quote!(#visit::visit_buffers(&self.#member, &#nn::module::join(prefix, #label), f);));
                counters.push(quote!(#visit::visit_counters(&self.#member, &#nn::module::join(prefix, #label), f);));
                generators
                    .push(quote!(#visit::visit_generators(&self.#member, &#nn::module::join(prefix, #label), f);));
                set_mode.push(quote!(#visit::set_mode(&mut self.#member, change);));
                modes.push(quote!(#visit::visit_modes(&self.#member, f);));
                if kind == (Kind::Child { printed: true }) {
                    prints.push(quote! {
                        ::std::write!(f, "{}({}): ", "  ".repeat(indent + 1), #label)?;
                        #visit::fmt_module(&self.#member, f, indent + 1)?;
                        ::std::writeln!(f)?;
                    });
                }
            }
        }
    }

    let mut generics = input.generics.clone();
    if attrs.float.is_none() {
        generics.params.push(GenericParam::Type(syn::parse_quote!(#fresh: #nn::Float)));
    }
    let (impl_generics, _, _) = generics.split_for_impl();
    let (_, ty_generics, where_clause) = input.generics.split_for_impl();
    let mut where_clause = where_clause.cloned().unwrap_or_else(|| syn::parse_quote!(where));
    if attrs.float.is_none() {
        // With a fixed element type the body alone checks the fields (and a private field type
        // stays out of the public impl's bounds).
        for bound in &bounds {
            where_clause.predicates.push(syn::parse_quote!(#bound));
        }
    }

    let struct_name = name.to_string();
    let fmt_module = if attrs.display {
        quote! {
            ::std::writeln!(f, "{}(", #struct_name)?;
            #( #prints )*
            ::std::write!(f, "{})", "  ".repeat(indent))
        }
    } else {
        quote! {
            let _ = indent;
            ::std::write!(f, "{}", self)
        }
    };
    // Unused-variable lints stay quiet for a struct without the fields that use them.
    let visit_impl = quote! {
        impl #impl_generics #nn::Visit<#t> for #name #ty_generics #where_clause {
            #[allow(unused_variables)]
            fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(&str, &#nn::Var<#t>)) {
                #( #params )*
            }
            #[allow(unused_variables)]
            fn visit_buffers(&self, prefix: &str, f: &mut dyn FnMut(&str, &#nn::Var<#t>)) {
                #( #buffers )*
            }
            #[allow(unused_variables)]
            fn visit_counters(&self, prefix: &str, f: &mut dyn FnMut(&str, &#nn::module::Counter)) {
                #( #counters )*
            }
            #[allow(unused_variables)]
            fn visit_generators(&self, prefix: &str, f: &mut dyn FnMut(&str, &#nn::module::GeneratorSlot)) {
                #( #generators )*
            }
            #[allow(unused_variables)]
            fn set_mode(&mut self, change: #nn::ModeChange) {
                #( #set_mode )*
            }
            #[allow(unused_variables)]
            fn visit_modes(&self, f: &mut dyn FnMut(#nn::Mode)) {
                #( #modes )*
            }
            fn fmt_module(&self, f: &mut ::std::fmt::Formatter<'_>, indent: usize) -> ::std::fmt::Result {
                #fmt_module
            }
        }
    };
    if !attrs.display {
        return Ok(visit_impl);
    }

    // Display: in the element type named by `#[module(float = f64)]`, else the struct's first
    // type parameter (a struct generic in its element type), else f32.
    let own_float = input.generics.type_params().next().map(|p| p.ident.clone());
    let (display_impl_generics, _, _) = input.generics.split_for_impl();
    let display_t = match (&attrs.float, &own_float) {
        (Some(ty), _) => quote!(#ty),
        (None, Some(p)) => quote!(#p),
        (None, None) => quote!(f32),
    };
    let mut display_where = input.generics.where_clause.clone().unwrap_or_else(|| syn::parse_quote!(where));
    display_where.predicates.push(syn::parse_quote!(Self: #nn::Visit<#display_t>));
    Ok(quote! {
        #visit_impl

        impl #display_impl_generics ::std::fmt::Display for #name #ty_generics #display_where {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                #nn::Visit::<#display_t>::fmt_module(self, f, 0)
            }
        }
    })
}
