//! Where a client's token is found (docs/protocol.md), tried in the route's order.
//!
//! - `header`: `Authorization: Bearer <jwt>`;
//! - `subprotocol`: an offered `Sec-WebSocket-Protocol` entry `bearer.<jwt>` (browsers cannot
//!   set headers); that entry is never selected or echoed;
//! - `cookie`: a named cookie (only on routes with an Origin allowlist);
//! - `query`: `?<param>=<jwt>` (off by default; query strings end up in logs and histories);
//! - `ticket`: a one-time ticket (`auth::ticket`), as `?ticket=<t>` or an offered
//!   `Sec-WebSocket-Protocol` entry `ticket.<t>` (never selected or echoed either).
//!
//! Also selects the application subprotocol, since both read the same header.

/// Prefix of a subprotocol entry carrying a token.
pub const BEARER_PROTOCOL_PREFIX: &str = "bearer.";

/// Prefix of a subprotocol entry carrying a one-time ticket.
pub const TICKET_PROTOCOL_PREFIX: &str = "ticket.";

/// The query parameter carrying a one-time ticket.
pub const TICKET_QUERY_PARAM: &str = "ticket";

/// Longest token accepted from any source; a JWT is far shorter in practice. Bounds the work
/// done on an unauthenticated request.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// A token source named in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer`.
    Header,
    /// `Sec-WebSocket-Protocol: bearer.<jwt>`.
    Subprotocol,
    /// A named cookie.
    Cookie,
    /// A named query parameter.
    Query,
    /// A one-time ticket: `?ticket=` or `Sec-WebSocket-Protocol: ticket.<t>`.
    Ticket,
}

impl TokenSource {
    /// Parse a config name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "header" => Some(Self::Header),
            "subprotocol" => Some(Self::Subprotocol),
            "cookie" => Some(Self::Cookie),
            "query" => Some(Self::Query),
            "ticket" => Some(Self::Ticket),
            _ => None,
        }
    }

    /// The config name (also a bounded log field).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Header => "header",
            Self::Subprotocol => "subprotocol",
            Self::Cookie => "cookie",
            Self::Query => "query",
            Self::Ticket => "ticket",
        }
    }
}

/// The parts of a handshake request a token can come from (raw header values).
#[derive(Debug, Default, Clone, Copy)]
pub struct TokenCarriers<'a> {
    /// `Authorization` header values.
    pub authorization: &'a [&'a str],
    /// `Sec-WebSocket-Protocol` header values (each may be a comma list).
    pub protocols: &'a [&'a str],
    /// `Cookie` header values.
    pub cookies: &'a [&'a str],
    /// The raw query string, without `?`.
    pub query: &'a str,
}

/// Why the token carriers of a request hold no usable token although they hold something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    /// More than one token across the route's sources (two sources, two `bearer.*` entries,
    /// two cookies or query parameters of the token's name): never "first one wins", since a
    /// valid token in one place would hide a forged one in another.
    Multiple,
    /// A token longer than [`MAX_TOKEN_BYTES`].
    Oversized,
    /// A carrier present with an empty value (`Bearer `, `bearer.`, `access_token=`,
    /// `ticket.`, `ticket=`).
    Empty,
}

/// Find the one token in the route's `sources`. `Ok(None)`: no source carries a token.
///
/// # Errors
/// [`TokenProblem`] when the sources carry more than one token, or one that is empty or
/// oversized (those are invalid tokens, not missing ones).
pub fn extract_token<'a>(
    sources: &[TokenSource],
    carriers: &TokenCarriers<'a>,
    cookie_name: &str,
    query_param: &str,
) -> Result<Option<(&'a str, TokenSource)>, TokenProblem> {
    let mut found: Option<(&'a str, TokenSource)> = None;
    let mut take = |token: &'a str, src: TokenSource| -> Result<(), TokenProblem> {
        if found.replace((token, src)).is_some() {
            return Err(TokenProblem::Multiple);
        }
        Ok(())
    };
    for src in sources {
        match src {
            TokenSource::Header => {
                for t in carriers.authorization.iter().filter_map(|v| bearer_from_header(v)) {
                    take(t, *src)?;
                }
            }
            TokenSource::Subprotocol => {
                for t in offered_protocols(carriers.protocols).filter_map(|p| p.strip_prefix(BEARER_PROTOCOL_PREFIX)) {
                    take(t, *src)?;
                }
            }
            TokenSource::Cookie => {
                for t in carriers.cookies.iter().flat_map(|c| cookie_values(c, cookie_name)) {
                    take(t, *src)?;
                }
            }
            TokenSource::Query => {
                for t in query_values(carriers.query, query_param) {
                    take(t, *src)?;
                }
            }
            TokenSource::Ticket => {
                let offered =
                    offered_protocols(carriers.protocols).filter_map(|p| p.strip_prefix(TICKET_PROTOCOL_PREFIX));
                for t in query_values(carriers.query, TICKET_QUERY_PARAM).chain(offered) {
                    take(t, *src)?;
                }
            }
        }
    }
    match found {
        Some(("", _)) => Err(TokenProblem::Empty),
        Some((t, _)) if t.len() > MAX_TOKEN_BYTES => Err(TokenProblem::Oversized),
        other => Ok(other),
    }
}

/// The application subprotocols offered, in the client's order, without token entries.
pub fn offered_protocols<'a>(values: &'a [&'a str]) -> impl Iterator<Item = &'a str> + 'a {
    values.iter().flat_map(|v| v.split(',')).map(str::trim).filter(|p| !p.is_empty())
}

/// The subprotocol the gateway selects: the first one the client offered that the route lists
/// (`"*"` in the route's list accepts any). Token and ticket entries are never selected.
pub fn select_subprotocol<'a>(offered: &'a [&'a str], allowed: &[String]) -> Option<&'a str> {
    offered_protocols(offered).filter(|p| !is_credential_entry(p)).find(|p| allowed.iter().any(|a| a == "*" || a == p))
}

/// True for an offered subprotocol entry that carries a credential (`bearer.<jwt>`,
/// `ticket.<t>`, in any letter case): never selected, echoed or forwarded.
pub fn is_credential_entry(protocol: &str) -> bool {
    let starts = |prefix: &str| protocol.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix));
    starts(BEARER_PROTOCOL_PREFIX) || starts(TICKET_PROTOCOL_PREFIX)
}

fn bearer_from_header(value: &str) -> Option<&str> {
    let v = value.trim();
    let (scheme, rest) = v.split_at(v.find([' ', '\t']).unwrap_or(v.len()));
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

fn cookie_values<'a, 'n>(header: &'a str, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
    header.split(';').filter_map(move |pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"'))
    })
}

fn query_values<'a, 'n>(query: &'a str, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
    // JWTs are base64url + '.', which need no percent-decoding; a percent-encoded value is
    // taken as is and fails verification.
    query.split('&').filter_map(move |pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then_some(v)
    })
}

/// The query string with the values of the token parameter `name` and of
/// [`TICKET_QUERY_PARAM`] replaced, for logs (the gateway logs no query string; whatever does
/// must pass it through this first).
pub fn redact_query(query: &str, name: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if k == name || k == TICKET_QUERY_PARAM => format!("{k}=REDACTED"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [TokenSource; 5] =
        [TokenSource::Header, TokenSource::Subprotocol, TokenSource::Cookie, TokenSource::Query, TokenSource::Ticket];

    #[test]
    fn header_token_is_found_case_insensitively() {
        let c = TokenCarriers { authorization: &["bearer abc.def.ghi"], ..Default::default() };
        assert_eq!(extract_token(&ALL, &c, "t", "t"), Ok(Some(("abc.def.ghi", TokenSource::Header))));
        let c = TokenCarriers { authorization: &["Basic Zm9v"], ..Default::default() };
        assert_eq!(extract_token(&ALL, &c, "t", "t"), Ok(None));
    }

    #[test]
    fn subprotocol_token_is_found_among_other_entries() {
        let c = TokenCarriers { protocols: &["chat.v1, bearer.a.b.c"], ..Default::default() };
        assert_eq!(extract_token(&ALL, &c, "t", "t"), Ok(Some(("a.b.c", TokenSource::Subprotocol))));
    }

    #[test]
    fn cookie_and_query_tokens_are_found_by_name() {
        let c = TokenCarriers { cookies: &["a=1; access_token=x.y.z; b=2"], ..Default::default() };
        assert_eq!(extract_token(&ALL, &c, "access_token", "q"), Ok(Some(("x.y.z", TokenSource::Cookie))));
        let c = TokenCarriers { query: "room=1&access_token=q.r.s", ..Default::default() };
        assert_eq!(extract_token(&ALL, &c, "c", "access_token"), Ok(Some(("q.r.s", TokenSource::Query))));
    }

    #[test]
    fn only_the_routes_sources_are_read() {
        let c = TokenCarriers { query: "access_token=q.r.s", ..Default::default() };
        assert_eq!(extract_token(&[TokenSource::Header], &c, "c", "access_token"), Ok(None));
        let c = TokenCarriers {
            authorization: &["Bearer from.header.x"],
            query: "access_token=from.query.x",
            ..Default::default()
        };
        assert_eq!(
            extract_token(&[TokenSource::Header], &c, "c", "access_token"),
            Ok(Some(("from.header.x", TokenSource::Header)))
        );
    }

    #[test]
    fn more_than_one_token_is_refused_whatever_the_sources() {
        let multiple = Err(TokenProblem::Multiple);
        let two_sources = TokenCarriers {
            authorization: &["Bearer from.header.x"],
            query: "access_token=from.query.x",
            ..Default::default()
        };
        let order = [TokenSource::Query, TokenSource::Header];
        assert_eq!(extract_token(&order, &two_sources, "c", "access_token"), multiple);
        let two_entries = TokenCarriers { protocols: &["bearer.a.b.c, chat.v1", "bearer.d.e.f"], ..Default::default() };
        assert_eq!(extract_token(&ALL, &two_entries, "t", "t"), multiple);
        let two_headers = TokenCarriers { authorization: &["Bearer a.b.c", "bearer d.e.f"], ..Default::default() };
        assert_eq!(extract_token(&ALL, &two_headers, "t", "t"), multiple);
        let two_cookies = TokenCarriers { cookies: &["t=a.b.c; x=1", "t=d.e.f"], ..Default::default() };
        assert_eq!(extract_token(&ALL, &two_cookies, "t", "q"), multiple);
        let same_cookie_twice = TokenCarriers { cookies: &["t=a.b.c; t=a.b.c"], ..Default::default() };
        assert_eq!(extract_token(&ALL, &same_cookie_twice, "t", "q"), multiple);
        let two_params = TokenCarriers { query: "t=a.b.c&t=d.e.f", ..Default::default() };
        assert_eq!(extract_token(&ALL, &two_params, "c", "t"), multiple);
        let one_empty =
            TokenCarriers { authorization: &["Bearer a.b.c"], protocols: &["bearer."], ..Default::default() };
        assert_eq!(extract_token(&ALL, &one_empty, "t", "t"), multiple);
    }

    #[test]
    fn empty_or_oversized_tokens_are_invalid_not_missing() {
        let big = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        let v = [big.as_str()];
        let c = TokenCarriers { authorization: &v, ..Default::default() };
        assert_eq!(extract_token(&ALL, &c, "t", "t"), Err(TokenProblem::Oversized));
        let c = TokenCarriers { protocols: &["bearer."], ..Default::default() };
        assert_eq!(extract_token(&ALL, &c, "t", "t"), Err(TokenProblem::Empty));
        let c = TokenCarriers { authorization: &["Bearer   "], ..Default::default() };
        assert_eq!(extract_token(&ALL, &c, "t", "t"), Err(TokenProblem::Empty));
        let c = TokenCarriers { query: "t=", ..Default::default() };
        assert_eq!(extract_token(&ALL, &c, "c", "t"), Err(TokenProblem::Empty));
    }

    #[test]
    fn selection_skips_token_entries_and_follows_client_order() {
        let allowed = vec!["chat.v2".to_string(), "chat.v1".to_string()];
        assert_eq!(select_subprotocol(&["bearer.x.y.z, chat.v1, chat.v2"], &allowed), Some("chat.v1"));
        assert_eq!(select_subprotocol(&["bearer.x.y.z"], &allowed), None);
        assert_eq!(select_subprotocol(&["bearer.x"], &["*".to_string()]), None);
        assert_eq!(select_subprotocol(&["mqtt"], &["*".to_string()]), Some("mqtt"));
    }

    #[test]
    fn query_redaction_hides_only_the_token_and_the_ticket() {
        assert_eq!(redact_query("a=1&access_token=x.y.z", "access_token"), "a=1&access_token=REDACTED");
        assert_eq!(
            redact_query("ticket=wst_abc&room=1&ticket=again", "access_token"),
            "ticket=REDACTED&room=1&ticket=REDACTED"
        );
    }

    #[test]
    fn tickets_come_from_the_query_or_a_ticket_entry_and_are_never_selected() {
        let t = [TokenSource::Ticket];
        let c = TokenCarriers { query: "room=1&ticket=wst_x", ..Default::default() };
        assert_eq!(extract_token(&t, &c, "c", "q"), Ok(Some(("wst_x", TokenSource::Ticket))));
        let c = TokenCarriers { protocols: &["chat.v1, ticket.wst_y"], ..Default::default() };
        assert_eq!(extract_token(&t, &c, "c", "q"), Ok(Some(("wst_y", TokenSource::Ticket))));
        assert_eq!(select_subprotocol(&["ticket.wst_y, chat.v1"], &["*".to_string()]), Some("chat.v1"));
        assert_eq!(select_subprotocol(&["ticket.wst_y"], &["*".to_string()]), None);
        for entry in ["Ticket.wst_y", "TICKET.x", "BEARER.a.b.c", "Bearer.a.b.c"] {
            assert_eq!(select_subprotocol(&[entry], &["*".to_string()]), None, "{entry} is a credential in any case");
        }
        assert_eq!(select_subprotocol(&["ticketing"], &["*".to_string()]), Some("ticketing"));
        assert_eq!(select_subprotocol(&["é"], &["*".to_string()]), Some("é"));
        // Not a source of the route: not read.
        let c = TokenCarriers { query: "ticket=wst_x", ..Default::default() };
        assert_eq!(extract_token(&[TokenSource::Header], &c, "c", "q"), Ok(None));
    }

    #[test]
    fn a_ticket_beside_another_credential_or_twice_is_multiple() {
        let multiple = Err(TokenProblem::Multiple);
        let twice = TokenCarriers { query: "ticket=a&ticket=b", ..Default::default() };
        assert_eq!(extract_token(&ALL, &twice, "c", "q"), multiple);
        let same_twice = TokenCarriers { query: "ticket=a&ticket=a", ..Default::default() };
        assert_eq!(extract_token(&ALL, &same_twice, "c", "q"), multiple);
        let query_and_entry = TokenCarriers { query: "ticket=a", protocols: &["ticket.a"], ..Default::default() };
        assert_eq!(extract_token(&ALL, &query_and_entry, "c", "q"), multiple);
        let with_bearer = TokenCarriers { query: "ticket=a", authorization: &["Bearer x.y.z"], ..Default::default() };
        assert_eq!(extract_token(&ALL, &with_bearer, "c", "q"), multiple);
        let with_entry = TokenCarriers { protocols: &["bearer.x.y.z, ticket.a"], ..Default::default() };
        assert_eq!(extract_token(&ALL, &with_entry, "c", "q"), multiple);
    }

    #[test]
    fn an_empty_ticket_is_invalid_not_missing() {
        let t = [TokenSource::Ticket];
        let c = TokenCarriers { protocols: &["chat.v1, ticket."], ..Default::default() };
        assert_eq!(extract_token(&t, &c, "c", "q"), Err(TokenProblem::Empty));
        let c = TokenCarriers { query: "ticket=", ..Default::default() };
        assert_eq!(extract_token(&t, &c, "c", "q"), Err(TokenProblem::Empty));
        let big = format!("ticket={}", "a".repeat(MAX_TOKEN_BYTES + 1));
        let c = TokenCarriers { query: &big, ..Default::default() };
        assert_eq!(extract_token(&t, &c, "c", "q"), Err(TokenProblem::Oversized));
    }
}
