//! Credentials found in node configurations are not written into chain files: each becomes an
//! environment reference, `${TB_<NODE>_<WHAT>:-}`, named after the node it came from, and the
//! report lists it. The reference goes where Sluice expands variables — a connector's spec
//! (`baseUrl`, `headers`, MQTT `password`), at load — never into a rule's config, which is not
//! expanded (and whose templates take their values from messages, which must not reach the
//! environment). The default is empty, so the chain still loads without the variable; the
//! service then refuses the call, which says what is missing.
//!
//! What counts as a credential: URL userinfo (`https://user:PASSWORD@host`), a path segment
//! that looks like a token (Telegram's `bot<id>:<token>`; 20+ characters mixing digits, upper-
//! and lower-case letters, or 32+ hex digits; never a UUID), a query parameter named like a
//! credential (`token`, `apiKey`, `secret`, `password`, …), a header named so (`Authorization`,
//! `X-Api-Key`, …). A value that is a template (`${…}`, `$[…]`) comes from the message and is
//! left alone.

/// Words that mark a header, a query parameter or a field as a credential.
const SECRET_WORDS: &[&str] =
    &["authorization", "token", "key", "secret", "password", "passwd", "pwd", "auth", "signature", "sig", "appid"];

/// Endings that do too when written as one word (`apiKey`, `accesstoken`).
const SECRET_ENDINGS: &[&str] = &["token", "key", "secret", "password"];

/// Whether a header, parameter or field named `name` holds a credential: one of its words
/// (split at anything not a letter or digit) is one of [`SECRET_WORDS`], or ends like one
/// (`X-Api-Key`, `access_token`, `apiKey`; not `keyword` or `Content-Type`).
pub(crate) fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| SECRET_WORDS.contains(&w) || SECRET_ENDINGS.iter().any(|e| w.ends_with(e)))
}

/// A template (its value comes from the message).
pub(crate) fn is_template(value: &str) -> bool {
    value.contains("${") || value.contains("$[")
}

/// `TB_<NODE>_<WHAT>`: upper-case letters, digits and single underscores.
pub(crate) fn var_name(node: &str, what: &str) -> String {
    let mut out = String::from("TB");
    for part in [node, what] {
        out.push('_');
        for c in part.chars() {
            if c.is_ascii_alphanumeric() {
                out.push(c.to_ascii_uppercase());
            } else if !out.ends_with('_') {
                out.push('_');
            }
        }
        while out.ends_with('_') {
            out.pop();
        }
    }
    out
}

/// `${VAR:-}`: expanded at load, empty when unset.
pub(crate) fn reference(var: &str) -> String {
    format!("${{{var}:-}}")
}

/// One credential taken out: what it was (`URL path token`, `header Authorization`) and the
/// variable that holds it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Secret {
    pub what: String,
    pub var: String,
}

/// A URL with its credentials taken out: `base` (for the connector's `baseUrl`, with `${VAR:-}`
/// in place of each credential) and the rest (the node's `url`, resolved against it), or the
/// URL unchanged when it holds none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SplitUrl {
    pub base: Option<String>,
    pub rest: String,
    pub secrets: Vec<Secret>,
    /// Credentials found in a part of the URL that is a template: removed, not moved (the
    /// variable must be filled in by hand).
    pub dropped: bool,
}

/// A UUID (`8-4-4-4-12` hex): an entity id, not a credential.
fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts.iter().zip([8, 4, 4, 4, 12]).all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A path segment that looks like a token: at least 20 characters of letters, digits and
/// `-_:.` with digits and both upper- and lower-case letters (ThingsBoard's access tokens,
/// API keys), or at least 32 hex digits; never a UUID. A name such as
/// `temperature-sensor-01` is not one.
fn looks_like_token(segment: &str) -> bool {
    let has = |f: fn(&char) -> bool| segment.chars().any(|c| f(&c));
    let mixed = has(char::is_ascii_digit) && has(char::is_ascii_uppercase) && has(char::is_ascii_lowercase);
    let hex = segment.len() >= 32 && segment.chars().all(|c| c.is_ascii_hexdigit());
    segment.len() >= 20
        && segment.chars().all(|c| c.is_ascii_alphanumeric() || "-_:.".contains(c))
        && (mixed || hex)
        && !is_uuid(segment)
}

/// Takes the credentials out of `url`, naming their variables after `node`.
pub(crate) fn split_url(url: &str, node: &str) -> SplitUrl {
    let unchanged = SplitUrl { base: None, rest: url.to_string(), secrets: Vec::new(), dropped: false };
    let Some(scheme_end) = url.find("://") else { return unchanged };
    let after = scheme_end + 3;
    let authority_end = url[after..].find(['/', '?', '#']).map_or(url.len(), |i| after + i);
    let mut secrets = Vec::new();
    let mut out = url[..after].to_string();
    // Userinfo.
    let authority = &url[after..authority_end];
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if !is_template(userinfo) => {
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    let var = var_name(node, "PASSWORD");
                    out.push_str(&format!("{user}:{}", reference(&var)));
                    secrets.push(Secret { what: "URL password".into(), var });
                }
                None => {
                    let var = var_name(node, "USERINFO");
                    out.push_str(&reference(&var));
                    secrets.push(Secret { what: "URL userinfo".into(), var });
                }
            }
            out.push('@');
            out.push_str(host);
        }
        _ => out.push_str(authority),
    }
    // The end of the part that must go into the base: after the last credential.
    let mut split_at = if secrets.is_empty() { None } else { Some(out.len()) };
    let rest = &url[authority_end..];
    let (path, query_and_fragment) = match rest.find(['?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let segments: Vec<&str> = path.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        // Telegram's Bot API: `/bot<token>/<method>`; on its own host any such segment is the
        // token (an export's `bot"YOUR_BOT_TOKEN"` too).
        let telegram_host = authority.ends_with("api.telegram.org");
        let telegram = segment
            .strip_prefix("bot")
            .filter(|t| (t.contains(':') && looks_like_token(t)) || (telegram_host && i == 1 && !t.is_empty()))
            .filter(|t| !is_template(t));
        if let Some(_token) = telegram {
            let var = var_name(node, "TOKEN");
            out.push_str(&format!("bot{}", reference(&var)));
            secrets.push(Secret { what: "URL path token (Telegram bot)".into(), var });
            split_at = Some(out.len());
        } else if !is_template(segment) && looks_like_token(segment) {
            let var = var_name(node, "TOKEN");
            out.push_str(&reference(&var));
            secrets.push(Secret { what: "URL path token".into(), var });
            split_at = Some(out.len());
        } else {
            out.push_str(segment);
        }
    }
    let path_end = out.len();
    // The query: parameters named like credentials.
    let (query, fragment) = match query_and_fragment.find('#') {
        Some(i) => query_and_fragment.split_at(i),
        None => (query_and_fragment, ""),
    };
    if let Some(query) = query.strip_prefix('?') {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((name, value)) if is_secret_name(name) && !value.is_empty() && !is_template(value) => {
                    let var = var_name(node, name);
                    out.push_str(&format!("{name}={}", reference(&var)));
                    secrets.push(Secret { what: format!("URL query parameter {name}"), var });
                    split_at = Some(usize::MAX);
                }
                _ => out.push_str(pair),
            }
        }
    }
    out.push_str(fragment);
    let Some(split_at) = split_at else { return unchanged };
    // A credential in the query: the whole URL is the base (the node's `url` is empty); else
    // the base ends with the segment holding the last credential, and a slash, so that the
    // rest resolves below it.
    let (mut base, rest) = if split_at == usize::MAX {
        (out.clone(), String::new())
    } else if split_at >= path_end {
        (out[..split_at].to_string(), out[split_at..].to_string())
    } else {
        (out[..split_at].to_string(), out[split_at + 1..].to_string())
    };
    if split_at < path_end {
        base.push('/');
    }
    // The base is expanded from the environment, not rendered from the message: a template in
    // it cannot work. Then the credential is removed and the variable named for a hand fix.
    if is_template(&strip_refs(&base, &secrets)) {
        return SplitUrl { base: None, rest: strip_refs(&out, &secrets), secrets, dropped: true };
    }
    SplitUrl { base: Some(base), rest, secrets, dropped: false }
}

/// `text` without the references to `secrets`' variables.
fn strip_refs(text: &str, secrets: &[Secret]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        out = out.replace(&reference(&s.var), "");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_names_are_readable_and_stable() {
        assert_eq!(var_name("Send to Telegram", "TOKEN"), "TB_SEND_TO_TELEGRAM_TOKEN");
        assert_eq!(var_name("  ", "X-Api-Key"), "TB_X_API_KEY");
    }

    #[test]
    fn a_telegram_token_moves_into_the_base_url() {
        let url = "https://api.telegram.org/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/sendMessage";
        let split = split_url(url, "Telegram");
        assert_eq!(split.base.as_deref(), Some("https://api.telegram.org/bot${TB_TELEGRAM_TOKEN:-}/"));
        assert_eq!(split.rest, "sendMessage");
        assert_eq!(
            split.secrets,
            [Secret { what: "URL path token (Telegram bot)".into(), var: "TB_TELEGRAM_TOKEN".into() }]
        );
    }

    #[test]
    fn a_bot_segment_on_telegrams_host_is_the_token_whatever_it_looks_like() {
        let split = split_url("https://api.telegram.org/bot\"YOUR_BOT_TOKEN\"/sendMessage", "T");
        assert_eq!(split.base.as_deref(), Some("https://api.telegram.org/bot${TB_T_TOKEN:-}/"));
        assert_eq!(split.rest, "sendMessage");
    }

    #[test]
    fn userinfo_query_and_path_tokens() {
        let split = split_url("http://admin:hunter2@example.com:8080/api/v1/${deviceName}", "N");
        assert_eq!(split.base.as_deref(), Some("http://admin:${TB_N_PASSWORD:-}@example.com:8080/"));
        assert_eq!(split.rest, "api/v1/${deviceName}");
        let split = split_url("https://api.example.com/data?city=Kyiv&appid=0123456789abcdef&apikey=s3cr3t", "W");
        assert_eq!(
            split.base.as_deref(),
            Some("https://api.example.com/data?city=Kyiv&appid=${TB_W_APPID:-}&apikey=${TB_W_APIKEY:-}")
        );
        assert_eq!(split.rest, "");
        let split = split_url("http://tb:8080/api/v1/A1b2C3d4E5f6G7h8I9j0/telemetry", "Device");
        assert_eq!(split.base.as_deref(), Some("http://tb:8080/api/v1/${TB_DEVICE_TOKEN:-}/"));
        assert_eq!(split.rest, "telemetry");
    }

    #[test]
    fn ids_templates_and_plain_urls_stay() {
        for url in [
            "http://tb:8080/api/plugins/telemetry/DEVICE/784f394c-42b6-435a-983c-b7beff2784f9/values",
            "https://api.example.com/v1/${ss_latitude}/${token}?key=${apiKey}",
            "http://localhost:8080/api/v1/telemetry",
        ] {
            assert_eq!(split_url(url, "N"), SplitUrl { base: None, rest: url.into(), secrets: vec![], dropped: false });
        }
    }

    #[test]
    fn a_credential_after_a_template_is_removed() {
        let split = split_url("https://${host}/x?token=abc", "N");
        assert!(split.dropped);
        assert_eq!(split.rest, "https://${host}/x?token=");
        assert_eq!(split.secrets[0].var, "TB_N_TOKEN");
    }

    #[test]
    fn secret_names() {
        for name in ["Authorization", "X-Auth-Token", "x-api-key", "client_secret", "password"] {
            assert!(is_secret_name(name), "{name}");
        }
        assert!(!is_secret_name("Content-Type"));
        assert!(!is_secret_name("keyword"));
        assert!(is_secret_name("apiKey") && is_secret_name("access_token"));
    }

    #[test]
    fn names_in_paths_are_not_tokens() {
        for segment in ["temperature-sensor-01", "weather-station-zone-12", "2024-01-01T00:00:00.000"] {
            assert!(!looks_like_token(segment), "{segment}");
        }
        assert!(looks_like_token("sJ9vsdMEVOqYQ1QLYnQT"));
        assert!(looks_like_token("0123456789abcdef0123456789abcdef"));
    }
}
