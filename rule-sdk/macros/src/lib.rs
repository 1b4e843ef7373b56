//! The attributes of `sluice-sdk`. Each keeps the author's item exactly as written (so it stays
//! testable natively) and adds, under `cfg(target_arch = "wasm32")` only, a hidden node type and
//! the module's exports — and, there too, the module's manifest: a static in the custom section
//! `sluice:manifest` with its description (the first line of the doc comment) and the relations
//! it emits (see `ABI.md` §4a).

use proc_macro::TokenStream;
use quote::{quote, quote_spanned};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Attribute, Expr, FnArg, ItemFn, ItemImpl, Lit, Meta, Token, Type, parse_macro_input};

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
///
/// `#[node(relations = ["Anomaly", "Normal"])]` declares the relations it emits (`Failure` is
/// always possible and added); a connection on any other is a load error. `config` in the list
/// says that more relations are named by the node's config, `any` that any name may come (a
/// script): then the engine checks no connection. The doc comment's first line on the `impl`
/// (or `description = "…"`) describes the node.
#[proc_macro_attribute]
pub fn node(attr: TokenStream, item: TokenStream) -> TokenStream {
    let args = match Punctuated::<Meta, Token![,]>::parse_terminated.parse(attr) {
        Ok(args) => args,
        Err(err) => return err.to_compile_error().into(),
    };
    let imp = parse_macro_input!(item as ItemImpl);
    if imp.trait_.is_none() {
        return syn::Error::new(imp.span(), "#[node] goes on `impl Node for YourType { … }`").to_compile_error().into();
    }
    let mut manifest = Manifest { kind: "node", description: doc_line(&imp.attrs), relations: None, more: None };
    for arg in &args {
        if let Err(err) = node_arg(arg, &mut manifest) {
            let err = err.to_compile_error();
            return quote!(#imp #err).into();
        }
    }
    let ty = &imp.self_ty;
    let section = manifest.section();
    quote! {
        #imp
        ::sluice_sdk::export_node!(#ty);
        #section
    }
    .into()
}

/// The manifest the macro writes (parsed by `sluice_sdk::manifest::Manifest`).
struct Manifest {
    kind: &'static str,
    description: String,
    relations: Option<Vec<String>>,
    more: Option<&'static str>,
}

impl Manifest {
    fn json(&self) -> String {
        let mut json = format!(r#"{{"manifest":1,"kind":"{}""#, self.kind);
        if !self.description.is_empty() {
            json.push_str(&format!(r#","description":{}"#, json_string(&self.description)));
        }
        if let Some(relations) = &self.relations {
            let mut list: Vec<String> = relations.clone();
            if !list.iter().any(|r| r == "Failure") {
                list.push("Failure".into());
            }
            let list: Vec<String> = list.iter().map(|r| json_string(r)).collect();
            json.push_str(&format!(r#","relations":[{}]"#, list.join(",")));
        }
        if let Some(more) = self.more {
            json.push_str(&format!(r#","moreRelations":"{more}""#));
        }
        json.push('}');
        json
    }

    /// The static that puts the manifest into the module's `sluice:manifest` custom section
    /// (wasm32 only; `#[used]` keeps it through LTO, and wasm-ld keeps custom sections).
    fn section(&self) -> proc_macro2::TokenStream {
        let bytes = self.json().into_bytes();
        let len = bytes.len();
        let lit = proc_macro2::Literal::byte_string(&bytes);
        quote! {
            #[cfg(target_arch = "wasm32")]
            const _: () = {
                #[used]
                #[unsafe(link_section = "sluice:manifest")]
                static __SLUICE_MANIFEST: [u8; #len] = *#lit;
            };
        }
    }
}

fn node_arg(arg: &Meta, manifest: &mut Manifest) -> syn::Result<()> {
    let Meta::NameValue(nv) = arg else {
        return Err(syn::Error::new(arg.span(), "expected `relations = [\"A\", \"B\"]` or `description = \"…\"`"));
    };
    if nv.path.is_ident("description") {
        match &nv.value {
            Expr::Lit(syn::ExprLit { lit: Lit::Str(s), .. }) => manifest.description = s.value(),
            other => return Err(syn::Error::new(other.span(), "`description` is a string")),
        }
        return Ok(());
    }
    if !nv.path.is_ident("relations") {
        return Err(syn::Error::new(nv.path.span(), "#[node] takes `relations = [...]` and `description = \"…\"`"));
    }
    let Expr::Array(array) = &nv.value else {
        return Err(syn::Error::new(nv.value.span(), "`relations` is a list: `[\"Anomaly\", \"Normal\"]`"));
    };
    let mut list = Vec::new();
    for elem in &array.elems {
        match elem {
            Expr::Lit(syn::ExprLit { lit: Lit::Str(s), .. }) if !s.value().trim().is_empty() => list.push(s.value()),
            Expr::Path(p) if p.path.is_ident("config") => manifest.more = manifest.more.or(Some("config")),
            Expr::Path(p) if p.path.is_ident("any") => manifest.more = Some("any"),
            other => {
                return Err(syn::Error::new(
                    other.span(),
                    "a relation is a non-empty string literal, or `config` (named by the config) or `any`",
                ));
            }
        }
    }
    manifest.relations = Some(list);
    Ok(())
}

/// The first non-empty line of the doc comment.
fn doc_line(attrs: &[Attribute]) -> String {
    for attr in attrs {
        if let Meta::NameValue(nv) = &attr.meta
            && nv.path.is_ident("doc")
            && let Expr::Lit(syn::ExprLit { lit: Lit::Str(s), .. }) = &nv.value
        {
            let text = s.value();
            let line = text.trim();
            if !line.is_empty() {
                return line.to_string();
            }
        }
    }
    String::new()
}

fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
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
    let manifest = Manifest {
        kind: if kind == Kind::Filter { "filter" } else { "transform" },
        description: doc_line(&func.attrs),
        relations: Some(match kind {
            Kind::Filter => vec!["True".into(), "False".into()],
            Kind::Transform => vec!["Success".into()],
        }),
        more: None,
    }
    .section();
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

        #manifest
    })
}
