//! The attributes of `sluice-sdk`. Each keeps the author's item exactly as written (so it stays
//! testable natively) and adds, under `cfg(target_arch = "wasm32")` only, a hidden node type and
//! the module's exports.

use proc_macro::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, ItemImpl, Type, parse_macro_input};

/// Marks `fn(&Msg, &Config) -> Result<bool>` (or `fn(&Msg) -> Result<bool>`) as this module's
/// node: `Ok(true)` forwards the message on `True`, `Ok(false)` on `False`, `Err` goes to
/// `Failure`.
#[proc_macro_attribute]
pub fn filter(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_fn(attr, item, Kind::Filter)
}

/// Marks `fn(Msg, &Config) -> Result<Msg>` (or `fn(Msg) -> Result<Msg>`) as this module's node:
/// the returned message goes to `Success`, `Err` to `Failure`.
#[proc_macro_attribute]
pub fn transform(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_fn(attr, item, Kind::Transform)
}

/// Marks `impl Node for T { … }` as this module's node.
#[proc_macro_attribute]
pub fn node(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        let attr = proc_macro2::TokenStream::from(attr);
        return syn::Error::new(attr.span(), "#[node] takes no arguments").to_compile_error().into();
    }
    let imp = parse_macro_input!(item as ItemImpl);
    if imp.trait_.is_none() {
        return syn::Error::new(imp.span(), "#[node] goes on `impl Node for YourType { … }`").to_compile_error().into();
    }
    let ty = &imp.self_ty;
    quote! {
        #imp
        ::sluice_sdk::export_node!(#ty);
    }
    .into()
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Filter,
    Transform,
}

fn expand_fn(attr: TokenStream, item: TokenStream, kind: Kind) -> TokenStream {
    if !attr.is_empty() {
        let attr = proc_macro2::TokenStream::from(attr);
        return syn::Error::new(attr.span(), "this attribute takes no arguments").to_compile_error().into();
    }
    let func = parse_macro_input!(item as ItemFn);
    match expand_fn_inner(&func, kind) {
        Ok(tokens) => tokens.into(),
        Err(err) => {
            let err = err.to_compile_error();
            quote!(#func #err).into()
        }
    }
}

fn expand_fn_inner(func: &ItemFn, kind: Kind) -> syn::Result<proc_macro2::TokenStream> {
    let name = &func.sig.ident;
    let inputs: Vec<&FnArg> = func.sig.inputs.iter().collect();
    let (msg_hint, out_hint) = match kind {
        Kind::Filter => ("msg: &Msg", "Result<bool>"),
        Kind::Transform => ("msg: Msg", "Result<Msg>"),
    };
    if func.sig.asyncness.is_some() || !func.sig.generics.params.is_empty() {
        return Err(syn::Error::new(func.sig.span(), "a rule function is a plain, non-generic, non-async fn"));
    }
    if !matches!(func.sig.output, syn::ReturnType::Type(..)) {
        return Err(syn::Error::new(func.sig.span(), format!("a rule function returns `{out_hint}`")));
    }
    let config_ty: proc_macro2::TokenStream = match inputs.as_slice() {
        [_msg] => quote!(::sluice_sdk::NoConfig),
        [_msg, FnArg::Typed(cfg)] => match &*cfg.ty {
            Type::Reference(r) if r.mutability.is_none() => {
                let inner = &r.elem;
                quote!(#inner)
            }
            other => {
                return Err(syn::Error::new(
                    other.span(),
                    "the config parameter is a shared reference, e.g. `cfg: &Config`",
                ));
            }
        },
        _ => {
            return Err(syn::Error::new(
                func.sig.inputs.span(),
                format!("expected `({msg_hint})` or `({msg_hint}, cfg: &Config)`"),
            ));
        }
    };
    let with_config = inputs.len() == 2;
    let span = func.sig.span();
    let body = match (kind, with_config) {
        (Kind::Filter, true) => quote_spanned!(span=> ::sluice_sdk::node::filter_outputs(#name(&msg, &self.0)?, out)),
        (Kind::Filter, false) => quote_spanned!(span=> ::sluice_sdk::node::filter_outputs(#name(&msg)?, out)),
        (Kind::Transform, true) => {
            quote_spanned!(span=> ::sluice_sdk::node::transform_outputs(#name(msg, &self.0)?, out))
        }
        (Kind::Transform, false) => quote_spanned!(span=> ::sluice_sdk::node::transform_outputs(#name(msg)?, out)),
    };
    Ok(quote! {
        // Natively the function is only called by tests; in wasm, by the exports below.
        #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
        #func

        #[cfg(target_arch = "wasm32")]
        const _: () = {
            #[doc(hidden)]
            pub struct __SluiceNode(#config_ty);

            impl ::sluice_sdk::Node for __SluiceNode {
                type Config = #config_ty;
                fn init(config: Self::Config) -> ::sluice_sdk::Result<Self> {
                    Ok(__SluiceNode(config))
                }
                #[allow(unused_variables)]
                fn on_msg(&mut self, msg: ::sluice_sdk::Msg, out: &mut ::sluice_sdk::Outputs) -> ::sluice_sdk::Result<()> {
                    #body;
                    Ok(())
                }
            }

            ::sluice_sdk::export_node!(__SluiceNode);
        };
    })
}
