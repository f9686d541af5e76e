//! `#[derive(Module)]`: writes `tapegrad::nn::Visit` (the walk over parameters, buffers and
//! modes) and `Display` for a struct of modules, so a custom model implements only `forward`.
//!
//! Every field is visited as a child named after the field (tuple fields by index), unless it is
//! marked `#[module(skip)]` (for configuration such as sizes or flags). A child may be a layer, a
//! model, a `Var` (a parameter), or a `Vec`, `Option` or `Box` of those.
//!
//! `Display` prints the tree like PyTorch's `print(model)`. It is written for the struct's first
//! type parameter when it has one (a model generic in its element type), else for `f32`; a
//! non-generic `f64` model says so with `#[module(float = f64)]` on the struct.
//!
//! The generated impl is generic over the element type where the fields allow it:
//! `impl<T: Float> Visit<T> for Model where Field: Visit<T>, ...`, so a struct of `f32` layers
//! gets `Visit<f32>` and a struct generic in its element type gets both.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use proc_macro_crate::{crate_name, FoundCrate};
use quote::{format_ident, quote};
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

fn is_skipped(attrs: &[syn::Attribute]) -> syn::Result<bool> {
    let mut skip = false;
    for attr in attrs.iter().filter(|a| a.path().is_ident("module")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("skip") {
                skip = true;
                Ok(())
            } else {
                Err(meta.error("expected `#[module(skip)]`"))
            }
        })?;
    }
    Ok(skip)
}

/// The element type a struct-level `#[module(float = f64)]` names, if any.
fn struct_float(attrs: &[syn::Attribute]) -> syn::Result<Option<syn::Type>> {
    let mut float = None;
    for attr in attrs.iter().filter(|a| a.path().is_ident("module")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("float") {
                float = Some(meta.value()?.parse::<syn::Type>()?);
                Ok(())
            } else {
                Err(meta.error("expected `#[module(float = f32)]` or `#[module(float = f64)]` on a struct"))
            }
        })?;
    }
    Ok(float)
}

/// Derives `Visit` and `Display` for a struct; see the crate docs.
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
    let mut members = vec![];
    let mut labels = vec![];
    let mut types = vec![];
    let fields: Vec<&syn::Field> = match &data.fields {
        Fields::Named(f) => f.named.iter().collect(),
        Fields::Unnamed(f) => f.unnamed.iter().collect(),
        Fields::Unit => vec![],
    };
    for (i, field) in fields.into_iter().enumerate() {
        if is_skipped(&field.attrs)? {
            continue;
        }
        match &field.ident {
            Some(ident) => {
                labels.push(ident.to_string());
                members.push(Member::Named(ident.clone()));
            }
            None => {
                labels.push(i.to_string());
                members.push(Member::Unnamed(Index::from(i)));
            }
        }
        types.push(field.ty.clone());
    }

    // The element type: a fresh parameter, so that the impl covers whatever the fields allow.
    let t = format_ident!("__TapegradFloat");
    let mut generics = input.generics.clone();
    generics.params.push(GenericParam::Type(syn::parse_quote!(#t: #nn::Float)));
    let (impl_generics, _, _) = generics.split_for_impl();
    let (_, ty_generics, where_clause) = input.generics.split_for_impl();
    let mut where_clause = where_clause.cloned().unwrap_or_else(|| syn::parse_quote!(where));
    for ty in &types {
        where_clause.predicates.push(syn::parse_quote!(#ty: #nn::Visit<#t>));
    }

    // Display: in the element type named by `#[module(float = f64)]`, else the struct's first
    // type parameter (a struct generic in its element type), else f32.
    let own_float = input.generics.type_params().next().map(|p| p.ident.clone());
    let (display_impl_generics, _, _) = input.generics.split_for_impl();
    let display_t = match (struct_float(&input.attrs)?, &own_float) {
        (Some(ty), _) => quote!(#ty),
        (None, Some(p)) => quote!(#p),
        (None, None) => quote!(f32),
    };
    let display_bound = quote!(Self: #nn::Visit<#display_t>);
    let display_where = match input.generics.where_clause.as_ref() {
        Some(w) => {
            let preds = &w.predicates;
            quote!(where #preds, #display_bound)
        }
        None => quote!(where #display_bound),
    };
    let struct_name = name.to_string();

    Ok(quote! {
        impl #impl_generics #nn::Visit<#t> for #name #ty_generics #where_clause {
            fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(&str, &#nn::Var<#t>)) {
                #( #nn::Visit::<#t>::visit_parameters(&self.#members, &#nn::module::join(prefix, #labels), f); )*
            }
            fn visit_buffers(&self, prefix: &str, f: &mut dyn FnMut(&str, &#nn::Var<#t>)) {
                #( #nn::Visit::<#t>::visit_buffers(&self.#members, &#nn::module::join(prefix, #labels), f); )*
            }
            fn set_mode(&mut self, change: #nn::ModeChange) {
                #( #nn::Visit::<#t>::set_mode(&mut self.#members, change); )*
            }
            fn visit_modes(&self, f: &mut dyn FnMut(#nn::Mode)) {
                #( #nn::Visit::<#t>::visit_modes(&self.#members, f); )*
            }
            fn fmt_module(&self, f: &mut ::std::fmt::Formatter<'_>, indent: usize) -> ::std::fmt::Result {
                ::std::writeln!(f, "{}(", #struct_name)?;
                #(
                    ::std::write!(f, "{}({}): ", "  ".repeat(indent + 1), #labels)?;
                    #nn::Visit::<#t>::fmt_module(&self.#members, f, indent + 1)?;
                    ::std::writeln!(f)?;
                )*
                ::std::write!(f, "{})", "  ".repeat(indent))
            }
        }

        impl #display_impl_generics ::std::fmt::Display for #name #ty_generics #display_where {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                #nn::Visit::<#display_t>::fmt_module(self, f, 0)
            }
        }
    })
}
