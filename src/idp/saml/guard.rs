//! The checks a SAML message passes *before* any XML library that resolves references or
//! runs transforms sees it.
//!
//! xmlsec dereferences `<ds:Reference URI=…>` (http://, file://) and runs XSLT transforms
//! before the signature is known to be good, and libxml2 honours DOCTYPEs. So this streaming
//! pass (quick-xml, which resolves nothing) admits only the shape real IdPs send: one root
//! message, at most one assertion (plain, or one `EncryptedAssertion` of the usual XML
//! Encryption shape) directly under a `Response`, signatures only directly under the element
//! they sign and pointing at it by ID, the usual transforms and SHA-2 algorithms, and no
//! DOCTYPE, comments, processing instructions, CDATA, custom entities, other encrypted parts
//! or duplicate IDs. A decrypted assertion passes this again, in its place. That shape alone also defeats the signature-wrapping
//! family (XSW1-8 all need a second copy of the signed element or a moved signature).
//!
//! The pass must read exactly the document libxml2 will read, or it vouches for a different
//! one: libxml2 switches encoding on the XML declaration (UTF-7, UTF-16, EBCDIC, ...) and
//! recovers from malformed markup, so markup hidden in another encoding or in a construct
//! the two parsers read differently would reach xmlsec unseen. [`prepare`] therefore admits
//! only UTF-8 documents of XML 1.0 characters and hands on the text *without* its
//! declaration (nothing left to switch on), and the pass refuses what the two could disagree
//! on (odd names, `<` in attribute values, `]]>` in text).

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use std::collections::HashSet;
use thiserror::Error;

const PROTOCOL_NS: &[u8] = b"urn:oasis:names:tc:SAML:2.0:protocol";
const ASSERTION_NS: &[u8] = b"urn:oasis:names:tc:SAML:2.0:assertion";
const DSIG_NS: &[u8] = b"http://www.w3.org/2000/09/xmldsig#";
const XENC_NS: &[u8] = b"http://www.w3.org/2001/04/xmlenc#";
const XENC11_NS: &[u8] = b"http://www.w3.org/2009/xmlenc11#";
const XINCLUDE_NS: &[u8] = b"http://www.w3.org/2001/XInclude";

/// Transforms a SAML signature may use: enveloped signature and exclusive c14n.
const ALLOWED_TRANSFORMS: &[&str] = &[
    "http://www.w3.org/2000/09/xmldsig#enveloped-signature",
    "http://www.w3.org/2001/10/xml-exc-c14n#",
    "http://www.w3.org/2001/10/xml-exc-c14n#WithComments",
];
/// Canonicalisation of `SignedInfo`.
const ALLOWED_C14N: &[&str] = &[
    "http://www.w3.org/2001/10/xml-exc-c14n#",
    "http://www.w3.org/2001/10/xml-exc-c14n#WithComments",
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments",
    "http://www.w3.org/2006/12/xml-c14n11",
    "http://www.w3.org/2006/12/xml-c14n11#WithComments",
];
/// Signature algorithms: SHA-256 or stronger (no SHA-1, no DSA).
pub const ALLOWED_SIGNATURE_METHODS: &[&str] = &[
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512",
];
/// SHA-1, for an IdP entry that opts in (`allow_sha1`) because its IdP can do nothing else.
const SHA1_SIGNATURE_METHOD: &str = "http://www.w3.org/2000/09/xmldsig#rsa-sha1";
const SHA1_DIGEST: &str = "http://www.w3.org/2000/09/xmldsig#sha1";
/// Digest algorithms: SHA-256 or stronger.
const ALLOWED_DIGESTS: &[&str] = &[
    "http://www.w3.org/2001/04/xmlenc#sha256",
    "http://www.w3.org/2001/04/xmldsig-more#sha384",
    "http://www.w3.org/2001/04/xmlenc#sha512",
];

const MAX_DEPTH: usize = 32;
const MAX_ELEMENTS: usize = 5_000;
const MAX_ATTRIBUTES: usize = 64;

/// Why a message was refused before signature verification.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum GuardError {
    /// A DOCTYPE (entity expansion, XXE, external DTDs).
    #[error("DOCTYPE is not allowed")]
    Doctype,
    /// An XML comment (comment injection splits signed text values).
    #[error("XML comments are not allowed")]
    Comment,
    /// A processing instruction.
    #[error("processing instructions are not allowed")]
    ProcessingInstruction,
    /// A CDATA section.
    #[error("CDATA sections are not allowed")]
    Cdata,
    /// An entity other than the five predefined ones.
    #[error("entity reference `&{0};` is not allowed")]
    Entity(String),
    /// Not well-formed, or too big a tree.
    #[error("malformed XML: {0}")]
    Malformed(String),
    /// Another root element than expected.
    #[error("root element must be {expected}, found {found}")]
    WrongRoot {
        /// What the endpoint accepts.
        expected: &'static str,
        /// What came.
        found: String,
    },
    /// An error status from the IdP instead of an assertion (e.g. user not assigned).
    #[error("the IdP refused the login with status `{0}`")]
    IdpStatus(String),
    /// Zero or several assertions in a response.
    #[error("a response must carry exactly one Assertion, found {0}")]
    AssertionCount(usize),
    /// An assertion not directly under the response.
    #[error("Assertion outside its place directly under Response")]
    AssertionMisplaced,
    /// Encrypted content other than one `EncryptedAssertion` (encrypted NameIDs and
    /// attributes are not decrypted).
    #[error(
        "encrypted content is accepted only as one EncryptedAssertion directly under Response"
    )]
    Encrypted,
    /// Inside an `EncryptedAssertion`, something XML Encryption as SAML uses it does not
    /// have (a `CipherReference` to fetch, a signature, foreign elements).
    #[error("`{0}` is not allowed inside an EncryptedAssertion")]
    EncryptedShape(String),
    /// A signature not directly under the response or assertion.
    #[error("Signature outside its place directly under the element it signs")]
    SignatureMisplaced,
    /// Two signatures on one element.
    #[error("more than one Signature on one element")]
    DuplicateSignature,
    /// Not exactly one `Reference` in a signature.
    #[error("a Signature must have exactly one Reference")]
    ReferenceCount,
    /// A reference to anything but the signed element itself.
    #[error("Reference URI `{0}` does not point at the signed element")]
    ReferenceUri(String),
    /// A transform outside the allowlist (XSLT, XPath, …).
    #[error("Transform `{0}` is not allowed")]
    Transform(String),
    /// A canonicalisation outside the allowlist.
    #[error("CanonicalizationMethod `{0}` is not allowed")]
    Canonicalization(String),
    /// A weak or unknown signature algorithm.
    #[error("SignatureMethod `{0}` is not allowed (SHA-256 or stronger required)")]
    SignatureAlgorithm(String),
    /// A weak or unknown digest.
    #[error("DigestMethod `{0}` is not allowed (SHA-256 or stronger required)")]
    DigestAlgorithm(String),
    /// Two elements with the same ID.
    #[error("duplicate ID `{0}`")]
    DuplicateId(String),
    /// A declared encoding other than UTF-8 (libxml2 would decode the bytes differently).
    #[error("declared encoding `{0}` is not allowed (UTF-8 only)")]
    Encoding(String),
    /// An XML version other than 1.0.
    #[error("XML version `{0}` is not allowed (1.0 only)")]
    Version(String),
    /// A character XML 1.0 does not allow (NUL, other controls, U+FFFE/U+FFFF).
    #[error("character U+{0:04X} is not allowed in XML")]
    Character(u32),
    /// An element that can make the verifier fetch or include something.
    #[error("element `{0}` is not allowed")]
    Forbidden(String),
}

/// The root message an endpoint expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    /// `samlp:Response` (the ACS).
    Response,
    /// `samlp:LogoutRequest` (IdP-initiated logout).
    LogoutRequest,
    /// `samlp:LogoutResponse` (the answer to our logout).
    LogoutResponse,
}

impl Root {
    fn local_name(self) -> &'static str {
        match self {
            Root::Response => "Response",
            Root::LogoutRequest => "LogoutRequest",
            Root::LogoutResponse => "LogoutResponse",
        }
    }
}

/// What the pass learned about the message (unverified: only for checks that must also
/// hold on the unsigned envelope, and for choosing the path).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuardFacts {
    /// The root's `ID`.
    pub root_id: Option<String>,
    /// The root's `Destination`.
    pub destination: Option<String>,
    /// The root's `InResponseTo`.
    pub in_response_to: Option<String>,
    /// The root's `IssueInstant`.
    pub issue_instant: Option<String>,
    /// The root carries a signature over itself.
    pub root_signed: bool,
    /// The assertion carries a signature over itself.
    pub assertion_signed: bool,
    /// The assertion came as an `EncryptedAssertion` (its own facts are read after
    /// decryption).
    pub assertion_encrypted: bool,
    /// Any `SubjectConfirmationData` carries `InResponseTo`.
    pub assertion_in_response_to: bool,
    /// The top-level status code (and a second-level one, if any), as sent.
    pub status: Vec<String>,
    /// The text of the root's own `Issuer`, if it has one.
    pub root_issuer: Option<String>,
    /// The text of the assertion's `Issuer`.
    pub assertion_issuer: Option<String>,
    /// The assertion's subject `NameID` attributes `NameQualifier` and `SPNameQualifier`
    /// (samael keeps neither; a logout must send them back as received).
    pub name_qualifiers: NameQualifiers,
    /// A `LogoutRequest`'s `SessionIndex` elements, in order.
    pub session_indexes: Vec<String>,
}

/// The qualifiers of a NameID, as the IdP sent them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameQualifiers {
    /// `NameQualifier`.
    pub name_qualifier: Option<String>,
    /// `SPNameQualifier`.
    pub sp_name_qualifier: Option<String>,
}

/// Text the pass collects on the way (from elements at fixed places only).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Capture {
    RootIssuer,
    AssertionIssuer,
    SessionIndex,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Root,
    Assertion,
    Signature,
    SignedInfo,
    Reference,
    Transforms,
    /// An `EncryptedAssertion` and everything in it.
    Encrypted,
    Other,
}

struct Frame {
    kind: Kind,
    id: Option<String>,
    has_signature: bool,
    capture: Option<(Capture, String)>,
}

struct SignatureState {
    /// ID of the element the signature sits in (and must sign).
    parent_id: Option<String>,
    parent_is_root: bool,
    references: usize,
}

/// Refuses the constructs that make XML libraries fetch, expand or execute things
/// (DOCTYPE, processing instructions, custom entities). Used for metadata.
pub fn reject_unsafe_constructs(xml: &str) -> Result<(), GuardError> {
    let mut reader = NsReader::from_str(xml);
    let mut seen_root = false;
    loop {
        match reader.read_event() {
            Ok(Event::Eof) => return Ok(()),
            Ok(Event::DocType(_)) => return Err(GuardError::Doctype),
            Ok(Event::PI(_)) => return Err(GuardError::ProcessingInstruction),
            Ok(Event::Decl(_)) if seen_root => {
                return Err(GuardError::Malformed("misplaced XML declaration".into()))
            }
            Ok(Event::GeneralRef(r)) => {
                check_entity(&r)?;
            }
            Ok(Event::Start(_) | Event::Empty(_)) => seen_root = true,
            Ok(_) => {}
            Err(e) => return Err(GuardError::Malformed(e.to_string())),
        }
    }
}

/// The document as both parsers must read it: only XML 1.0 characters, a declaration (if any)
/// saying version 1.0 and UTF-8, a UTF-8 byte-order mark at most. Returns the text after the
/// declaration — what [`check_message`] checks and what may be handed to libxml2, which then
/// has no declaration to switch encoding on and sees the same characters.
pub fn prepare(xml: &str) -> Result<&str, GuardError> {
    if let Some(bad) = xml.chars().find(|c| !is_xml_char(*c)) {
        return Err(GuardError::Character(u32::from(bad)));
    }
    let text = xml.strip_prefix('\u{feff}').unwrap_or(xml);
    let Some(rest) = text.strip_prefix("<?xml") else {
        return Ok(text);
    };
    if !rest.starts_with(|c: char| c.is_ascii_whitespace()) {
        // `<?xml-stylesheet …?>` and friends: a processing instruction, refused by the pass.
        return Ok(text);
    }
    let end = rest
        .find("?>")
        .ok_or_else(|| GuardError::Malformed("unterminated XML declaration".into()))?;
    let declaration = rest.get(..end).unwrap_or("");
    let mut version = None;
    for (name, value) in pseudo_attributes(declaration)? {
        match name {
            "version" => version = Some(value),
            "encoding" if value.eq_ignore_ascii_case("utf-8") => {}
            "encoding" => return Err(GuardError::Encoding(value.to_string())),
            "standalone" if matches!(value, "yes" | "no") => {}
            other => {
                return Err(GuardError::Malformed(format!(
                    "unexpected `{other}` in the XML declaration"
                )))
            }
        }
    }
    match version {
        Some("1.0") => {}
        Some(v) => return Err(GuardError::Version(v.to_string())),
        None => {
            return Err(GuardError::Malformed(
                "XML declaration without version".into(),
            ))
        }
    }
    Ok(rest.get(end + 2..).unwrap_or("").trim_start())
}

/// The `name="value"` pairs of an XML declaration, strictly.
fn pseudo_attributes(text: &str) -> Result<Vec<(&str, &str)>, GuardError> {
    let bad = || GuardError::Malformed("unreadable XML declaration".into());
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=').ok_or_else(bad)?;
        let after = after.trim_start();
        let quote = after
            .chars()
            .next()
            .filter(|q| *q == '"' || *q == '\'')
            .ok_or_else(bad)?;
        let body = after.get(1..).ok_or_else(bad)?;
        let close = body.find(quote).ok_or_else(bad)?;
        out.push((name.trim(), body.get(..close).ok_or_else(bad)?));
        rest = body.get(close + 1..).ok_or_else(bad)?;
        if !rest.is_empty() && !rest.starts_with(|c: char| c.is_ascii_whitespace()) {
            return Err(bad());
        }
        rest = rest.trim_start();
    }
    Ok(out)
}

/// XML 1.0 `Char`: tab, line feed, carriage return, and everything from U+0020 except the
/// non-characters U+FFFE and U+FFFF (Rust strings hold no surrogates).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{fffe}' && c != '\u{ffff}')
}

/// A conservative XML name (with at most one prefix): ASCII letters, digits, `_`, `-`, `.`.
/// SAML, XML-DSig and XML-Enc use nothing else, and libxml2 reads such names like the pass.
fn is_plain_name(name: &[u8]) -> bool {
    let part = |p: &[u8]| {
        p.first()
            .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
            && p.iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    };
    let mut pieces = name.splitn(2, |b| *b == b':');
    match (pieces.next(), pieces.next()) {
        (Some(local), None) => part(local),
        (Some(prefix), Some(local)) => part(prefix) && part(local),
        _ => false,
    }
}

/// Checks a decoded SAML protocol message (as returned by [`prepare`]); see the module docs
/// for what passes.
pub fn check_message(xml: &str, expected: Root) -> Result<GuardFacts, GuardError> {
    check(xml, expected, false)
}

/// [`check_message`], admitting RSA-SHA1 signatures and SHA-1 digests as well (an IdP entry
/// with `allow_sha1 = true`).
pub fn check_message_allowing_sha1(xml: &str, expected: Root) -> Result<GuardFacts, GuardError> {
    check(xml, expected, true)
}

fn check(xml: &str, expected: Root, sha1: bool) -> Result<GuardFacts, GuardError> {
    let xml = prepare(xml)?;
    let mut reader = NsReader::from_str(xml);
    let mut stack: Vec<Frame> = Vec::new();
    let mut signatures: Vec<SignatureState> = Vec::new();
    let mut ids: HashSet<String> = HashSet::new();
    let mut facts = GuardFacts::default();
    let mut assertions = 0usize;
    let mut elements = 0usize;
    let mut root_done = false;
    loop {
        let (ns, event) = reader
            .read_resolved_event()
            .map_err(|e| GuardError::Malformed(e.to_string()))?;
        let ns: Option<Vec<u8>> = match ns {
            ResolveResult::Bound(n) => Some(n.as_ref().to_vec()),
            ResolveResult::Unbound => None,
            ResolveResult::Unknown(p) => {
                return Err(GuardError::Malformed(format!(
                    "unknown namespace prefix `{}`",
                    String::from_utf8_lossy(&p)
                )))
            }
        };
        let (start, empty) = match event {
            Event::Eof => break,
            Event::DocType(_) => return Err(GuardError::Doctype),
            Event::Comment(_) => return Err(GuardError::Comment),
            Event::PI(_) => return Err(GuardError::ProcessingInstruction),
            Event::CData(_) => return Err(GuardError::Cdata),
            Event::GeneralRef(r) => {
                let resolved = check_entity(&r)?;
                if let Some((_, text)) = stack.last_mut().and_then(|f| f.capture.as_mut()) {
                    text.push(resolved);
                }
                continue;
            }
            // `prepare` took the declaration off: another one is misplaced wherever it is.
            Event::Decl(_) => {
                return Err(GuardError::Malformed("misplaced XML declaration".into()))
            }
            Event::Text(t) => {
                let text = t
                    .decode()
                    .map_err(|e| GuardError::Malformed(e.to_string()))?;
                if text.contains("]]>") {
                    return Err(GuardError::Malformed("`]]>` in text".into()));
                }
                if let Some((_, captured)) = stack.last_mut().and_then(|f| f.capture.as_mut()) {
                    captured.push_str(&text);
                }
                continue;
            }
            Event::End(_) => {
                if let Some(frame) = stack.last_mut() {
                    if let Some((what, text)) = frame.capture.take() {
                        store_capture(&mut facts, what, text);
                    }
                }
                pop(&mut stack, &mut signatures)?;
                if stack.is_empty() {
                    root_done = true;
                }
                continue;
            }
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
        };
        if root_done {
            return Err(GuardError::Malformed(
                "content after the root element".into(),
            ));
        }
        elements += 1;
        if elements > MAX_ELEMENTS || stack.len() >= MAX_DEPTH {
            return Err(GuardError::Malformed(
                "document too large or too deep".into(),
            ));
        }
        if !is_plain_name(start.name().as_ref()) {
            return Err(GuardError::Malformed(format!(
                "element name `{}` is not allowed",
                String::from_utf8_lossy(start.name().as_ref())
            )));
        }
        let local = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
        let attrs = attributes(&start)?;
        let attr = |name: &str| {
            attrs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        for (key, value) in &attrs {
            if matches!(key.as_str(), "ID" | "Id" | "id" | "xml:id") && !ids.insert(value.clone()) {
                return Err(GuardError::DuplicateId(value.clone()));
            }
        }
        let ns = ns.as_deref();
        if ns == Some(XINCLUDE_NS) {
            return Err(GuardError::Forbidden(format!("xi:{local}")));
        }
        let parent = stack.last().map(|f| f.kind);
        let encrypted_assertion = ns == Some(ASSERTION_NS) && local == "EncryptedAssertion";
        if parent == Some(Kind::Encrypted) {
            encrypted_part(ns, &local, attr("URI").as_deref())?;
        } else if !encrypted_assertion
            && (ns == Some(XENC_NS)
                || ns == Some(XENC11_NS)
                || (ns == Some(ASSERTION_NS) && local.starts_with("Encrypted")))
        {
            return Err(GuardError::Encrypted);
        }
        let kind = if parent == Some(Kind::Encrypted) {
            Kind::Encrypted
        } else if stack.is_empty() {
            if ns != Some(PROTOCOL_NS) || local != expected.local_name() {
                return Err(GuardError::WrongRoot {
                    expected: expected.local_name(),
                    found: local,
                });
            }
            facts.root_id = attr("ID");
            facts.destination = attr("Destination");
            facts.in_response_to = attr("InResponseTo");
            facts.issue_instant = attr("IssueInstant");
            Kind::Root
        } else if ns == Some(ASSERTION_NS) && local == "Assertion" {
            if expected != Root::Response || parent != Some(Kind::Root) || stack.len() != 1 {
                return Err(GuardError::AssertionMisplaced);
            }
            assertions += 1;
            Kind::Assertion
        } else if encrypted_assertion {
            if expected != Root::Response || parent != Some(Kind::Root) || stack.len() != 1 {
                return Err(GuardError::AssertionMisplaced);
            }
            assertions += 1;
            facts.assertion_encrypted = true;
            Kind::Encrypted
        } else if ns == Some(PROTOCOL_NS) && local == "StatusCode" && stack.len() <= 3 {
            facts.status.extend(attr("Value"));
            Kind::Other
        } else if ns == Some(ASSERTION_NS) && local == "SubjectConfirmationData" {
            if attr("InResponseTo").is_some() {
                facts.assertion_in_response_to = true;
            }
            Kind::Other
        } else if ns == Some(DSIG_NS) {
            match local.as_str() {
                "Signature" => {
                    let Some(holder) = stack.last_mut() else {
                        return Err(GuardError::SignatureMisplaced);
                    };
                    if !matches!(holder.kind, Kind::Root | Kind::Assertion) {
                        return Err(GuardError::SignatureMisplaced);
                    }
                    if holder.has_signature {
                        return Err(GuardError::DuplicateSignature);
                    }
                    holder.has_signature = true;
                    match holder.kind {
                        Kind::Root => facts.root_signed = true,
                        _ => facts.assertion_signed = true,
                    }
                    signatures.push(SignatureState {
                        parent_id: holder.id.clone(),
                        parent_is_root: holder.kind == Kind::Root,
                        references: 0,
                    });
                    Kind::Signature
                }
                "SignedInfo" if parent == Some(Kind::Signature) => Kind::SignedInfo,
                "CanonicalizationMethod" if parent == Some(Kind::SignedInfo) => {
                    let alg = attr("Algorithm").unwrap_or_default();
                    if !ALLOWED_C14N.contains(&alg.as_str()) {
                        return Err(GuardError::Canonicalization(alg));
                    }
                    Kind::Other
                }
                "SignatureMethod" if parent == Some(Kind::SignedInfo) => {
                    let alg = attr("Algorithm").unwrap_or_default();
                    let weak_but_allowed = sha1 && alg == SHA1_SIGNATURE_METHOD;
                    if !ALLOWED_SIGNATURE_METHODS.contains(&alg.as_str()) && !weak_but_allowed {
                        return Err(GuardError::SignatureAlgorithm(alg));
                    }
                    Kind::Other
                }
                "Reference" if parent == Some(Kind::SignedInfo) => {
                    let Some(sig) = signatures.last_mut() else {
                        return Err(GuardError::SignatureMisplaced);
                    };
                    sig.references += 1;
                    if sig.references > 1 {
                        return Err(GuardError::ReferenceCount);
                    }
                    let uri = attr("URI");
                    let points_at_parent = match uri.as_deref() {
                        Some("") => sig.parent_is_root,
                        Some(u) => u
                            .strip_prefix('#')
                            .is_some_and(|id| sig.parent_id.as_deref() == Some(id)),
                        None => false,
                    };
                    if !points_at_parent {
                        return Err(GuardError::ReferenceUri(uri.unwrap_or_default()));
                    }
                    Kind::Reference
                }
                "Transforms" if parent == Some(Kind::Reference) => Kind::Transforms,
                "Transform" if parent == Some(Kind::Transforms) => {
                    let alg = attr("Algorithm").unwrap_or_default();
                    if !ALLOWED_TRANSFORMS.contains(&alg.as_str()) {
                        return Err(GuardError::Transform(alg));
                    }
                    Kind::Other
                }
                "DigestMethod" if parent == Some(Kind::Reference) => {
                    let alg = attr("Algorithm").unwrap_or_default();
                    let weak_but_allowed = sha1 && alg == SHA1_DIGEST;
                    if !ALLOWED_DIGESTS.contains(&alg.as_str()) && !weak_but_allowed {
                        return Err(GuardError::DigestAlgorithm(alg));
                    }
                    Kind::Other
                }
                "DigestValue" if parent == Some(Kind::Reference) => Kind::Other,
                "SignatureValue" if parent == Some(Kind::Signature) => Kind::Other,
                "KeyInfo" if parent == Some(Kind::Signature) => Kind::Other,
                "X509Data" | "X509Certificate" | "KeyName" | "KeyValue" | "RSAKeyValue"
                | "Modulus" | "Exponent" | "X509IssuerSerial" | "X509IssuerName"
                | "X509SerialNumber" | "X509SubjectName" | "X509SKI" => Kind::Other,
                other => return Err(GuardError::Forbidden(format!("ds:{other}"))),
            }
        } else if parent == Some(Kind::Signature)
            || parent == Some(Kind::SignedInfo)
            || parent == Some(Kind::Reference)
            || parent == Some(Kind::Transforms)
        {
            // Foreign elements inside signature plumbing (e.g. InclusiveNamespaces under a
            // transform are fine, but not directly under these).
            return Err(GuardError::Forbidden(local));
        } else {
            Kind::Other
        };
        let capture = match (parent, ns, local.as_str()) {
            (Some(Kind::Root), Some(ASSERTION_NS), "Issuer") => Some(Capture::RootIssuer),
            (Some(Kind::Assertion), Some(ASSERTION_NS), "Issuer") => Some(Capture::AssertionIssuer),
            (Some(Kind::Root), Some(PROTOCOL_NS), "SessionIndex")
                if expected == Root::LogoutRequest =>
            {
                Some(Capture::SessionIndex)
            }
            _ => None,
        };
        // The subject's NameID: Response > Assertion > Subject > NameID.
        if ns == Some(ASSERTION_NS)
            && local == "NameID"
            && stack.len() == 3
            && parent == Some(Kind::Other)
            && stack.get(1).is_some_and(|f| f.kind == Kind::Assertion)
        {
            facts.name_qualifiers = NameQualifiers {
                name_qualifier: attr("NameQualifier"),
                sp_name_qualifier: attr("SPNameQualifier"),
            };
        }
        stack.push(Frame {
            kind,
            id: attr("ID"),
            has_signature: false,
            capture: capture.map(|c| (c, String::new())),
        });
        if empty {
            if let Some((what, text)) = stack.last_mut().and_then(|f| f.capture.take()) {
                store_capture(&mut facts, what, text);
            }
            pop(&mut stack, &mut signatures)?;
            if stack.is_empty() {
                root_done = true;
            }
        }
    }
    if !root_done {
        return Err(GuardError::Malformed("no complete root element".into()));
    }
    if expected == Root::Response && assertions != 1 {
        let failed = facts
            .status
            .first()
            .is_some_and(|s| s != "urn:oasis:names:tc:SAML:2.0:status:Success");
        if failed {
            return Err(GuardError::IdpStatus(facts.status.join(" / ")));
        }
        return Err(GuardError::AssertionCount(assertions));
    }
    Ok(facts)
}

/// An element inside an `EncryptedAssertion`: XML Encryption's own (the data, its key,
/// their algorithms and a key's name or certificate), nothing that fetches (`CipherReference`,
/// a `RetrievalMethod` leaving the document) and nothing else.
fn encrypted_part(ns: Option<&[u8]>, local: &str, uri: Option<&str>) -> Result<(), GuardError> {
    let allowed = match ns {
        Some(XENC_NS) => matches!(
            local,
            "EncryptedData"
                | "EncryptedKey"
                | "EncryptionMethod"
                | "CipherData"
                | "CipherValue"
                | "KeySize"
                | "OAEPparams"
                | "ReferenceList"
                | "DataReference"
                | "KeyReference"
                | "CarriedKeyName"
        ),
        Some(XENC11_NS) => local == "MGF",
        Some(DSIG_NS) => match local {
            "RetrievalMethod" => uri.is_some_and(|u| u.starts_with('#')),
            other => matches!(
                other,
                "KeyInfo"
                    | "DigestMethod"
                    | "KeyName"
                    | "X509Data"
                    | "X509Certificate"
                    | "X509IssuerSerial"
                    | "X509IssuerName"
                    | "X509SerialNumber"
                    | "X509SubjectName"
                    | "X509SKI"
                    | "KeyValue"
                    | "RSAKeyValue"
                    | "Modulus"
                    | "Exponent"
            ),
        },
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(GuardError::EncryptedShape(local.to_string()))
    }
}

fn store_capture(facts: &mut GuardFacts, what: Capture, text: String) {
    let text = text.trim().to_string();
    match what {
        Capture::RootIssuer => facts.root_issuer = Some(text),
        Capture::AssertionIssuer => facts.assertion_issuer = Some(text),
        Capture::SessionIndex => facts.session_indexes.push(text),
    }
}

fn pop(stack: &mut Vec<Frame>, signatures: &mut Vec<SignatureState>) -> Result<(), GuardError> {
    let frame = stack
        .pop()
        .ok_or_else(|| GuardError::Malformed("unbalanced end tag".into()))?;
    if frame.kind == Kind::Signature {
        let sig = signatures
            .pop()
            .ok_or_else(|| GuardError::Malformed("unbalanced signature".into()))?;
        if sig.references != 1 {
            return Err(GuardError::ReferenceCount);
        }
    }
    Ok(())
}

fn attributes(start: &BytesStart<'_>) -> Result<Vec<(String, String)>, GuardError> {
    let mut out = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| GuardError::Malformed(e.to_string()))?;
        if !is_plain_name(attr.key.as_ref()) {
            return Err(GuardError::Malformed(format!(
                "attribute name `{}` is not allowed",
                String::from_utf8_lossy(attr.key.as_ref())
            )));
        }
        // Not well-formed XML; libxml2 would "recover" from it in its own way.
        if attr.value.contains(&b'<') {
            return Err(GuardError::Malformed("`<` in an attribute value".into()));
        }
        let key = String::from_utf8_lossy(attr.key.as_ref()).into_owned();
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| GuardError::Malformed(e.to_string()))?
            .into_owned();
        out.push((key, value));
        if out.len() > MAX_ATTRIBUTES {
            return Err(GuardError::Malformed("too many attributes".into()));
        }
    }
    Ok(out)
}

/// The character a reference stands for: a character reference to an XML character, or one
/// of the five predefined entities; anything else is refused.
fn check_entity(r: &quick_xml::events::BytesRef<'_>) -> Result<char, GuardError> {
    if r.is_char_ref() {
        let c = r
            .resolve_char_ref()
            .map_err(|e| GuardError::Malformed(e.to_string()))?
            .ok_or_else(|| GuardError::Malformed("empty character reference".into()))?;
        if !is_xml_char(c) {
            return Err(GuardError::Character(u32::from(c)));
        }
        return Ok(c);
    }
    let name = String::from_utf8_lossy(r.as_ref()).into_owned();
    match name.as_str() {
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "amp" => Ok('&'),
        "apos" => Ok('\''),
        "quot" => Ok('"'),
        _ => Err(GuardError::Entity(name)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const SIG_OPEN: &str = r#"<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>"#;

    fn signature(uri: &str, transform: &str, digest: &str) -> String {
        format!(
            r#"{SIG_OPEN}<ds:Reference URI="{uri}"><ds:Transforms><ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><ds:Transform Algorithm="{transform}"/></ds:Transforms><ds:DigestMethod Algorithm="{digest}"/><ds:DigestValue>x</ds:DigestValue></ds:Reference></ds:SignedInfo><ds:SignatureValue>x</ds:SignatureValue></ds:Signature>"#
        )
    }

    fn good_sig(uri: &str) -> String {
        signature(
            uri,
            "http://www.w3.org/2001/10/xml-exc-c14n#",
            "http://www.w3.org/2001/04/xmlenc#sha256",
        )
    }

    fn response(root_sig: &str, assertion_sig: &str, name_id: &str) -> String {
        format!(
            r#"<?xml version="1.0"?><samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="r1" Destination="https://sp/acs" InResponseTo="req1"><saml:Issuer>idp</saml:Issuer>{root_sig}<saml:Assertion ID="a1"><saml:Issuer>idp</saml:Issuer>{assertion_sig}<saml:Subject><saml:NameID>{name_id}</saml:NameID></saml:Subject></saml:Assertion></samlp:Response>"#
        )
    }

    #[test]
    fn a_normal_signed_response_passes_with_its_facts() {
        let xml = response(&good_sig("#r1"), &good_sig("#a1"), "alice@example.com");
        let facts = check_message(&xml, Root::Response).unwrap();
        assert!(facts.root_signed && facts.assertion_signed);
        assert_eq!(facts.destination.as_deref(), Some("https://sp/acs"));
        assert_eq!(facts.in_response_to.as_deref(), Some("req1"));
    }

    #[test]
    fn hostile_shapes_are_refused() {
        let ok = good_sig("#a1");
        let cases: Vec<(String, &str)> = vec![
            (format!("<!DOCTYPE x [<!ENTITY a \"b\">]>{}", response("", &ok, "a")), "DOCTYPE"),
            (response("", &ok, "alice<!---->.evil"), "comments"),
            (response("", &ok, "<![CDATA[x]]>"), "CDATA"),
            (response("", &ok, "&xxe;"), "entity"),
            (response("", &ok, "<?pi x?>"), "processing"),
            (response("", &good_sig("http://127.0.0.1:9/x"), "a"), "Reference URI"),
            (response("", &good_sig("file:///etc/passwd"), "a"), "Reference URI"),
            (response("", &good_sig("#r1"), "a"), "Reference URI"),
            (response("", &good_sig(""), "a"), "Reference URI"),
            (
                response("", &signature("#a1", "http://www.w3.org/TR/1999/REC-xslt-19991116", "http://www.w3.org/2001/04/xmlenc#sha256"), "a"),
                "Transform",
            ),
            (
                response("", &signature("#a1", "http://www.w3.org/2001/10/xml-exc-c14n#", "http://www.w3.org/2000/09/xmldsig#sha1"), "a"),
                "DigestMethod",
            ),
            (
                response("", &ok.replace("rsa-sha256", "rsa-sha1").replace("xmldsig-more#rsa-sha1", "xmldsig#rsa-sha1"), "a"),
                "SignatureMethod",
            ),
            (response(&format!("{ok}{ok}"), "", "a"), "Reference URI"),
            (response("", &format!("{ok}{ok}"), "a"), "more than one Signature"),
            (response("", &ok, "a").replace("<saml:Subject>", "<saml:Subject><saml:Assertion ID=\"a2\"/>"), "Assertion outside"),
            (response("", &ok, "a").replace("</samlp:Response>", "<saml:Assertion ID=\"a2\"></saml:Assertion></samlp:Response>"), "exactly one Assertion"),
            (response("", &ok, "a").replace("ID=\"r1\"", "ID=\"a1\""), "duplicate ID"),
            (response("", &ok, "a").replace("<saml:Subject>", "<saml:EncryptedID/><saml:Subject>"), "encrypted"),
            (response("", &ok.replace("<ds:SignatureValue>", "<ds:Object><x/></ds:Object><ds:SignatureValue>"), "a"), "ds:Object"),
            (response("", &ok.replace("<ds:SignatureValue>x</ds:SignatureValue>", "<ds:SignatureValue>x</ds:SignatureValue><ds:KeyInfo><ds:RetrievalMethod URI=\"http://x/\"/></ds:KeyInfo>"), "a"), "RetrievalMethod"),
            ("<samlp:LogoutRequest xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\"/>".to_string(), "root element"),
        ];
        for (xml, expect) in cases {
            let err = check_message(&xml, Root::Response).expect_err(expect);
            assert!(
                err.to_string().contains(expect),
                "expected `{expect}` in `{err}`"
            );
        }
    }

    #[test]
    fn okta_style_inclusive_namespaces_and_key_info_pass() {
        let okta_sig = good_sig("#a1").replace(
            r#"<ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>"#,
            r#"<ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"><ec:InclusiveNamespaces xmlns:ec="http://www.w3.org/2001/10/xml-exc-c14n#" PrefixList="xs"/></ds:Transform>"#,
        ).replace(
            "<ds:SignatureValue>x</ds:SignatureValue>",
            "<ds:SignatureValue>x</ds:SignatureValue><ds:KeyInfo><ds:X509Data><ds:X509Certificate>MIIB</ds:X509Certificate></ds:X509Data></ds:KeyInfo>",
        );
        assert!(okta_sig.contains("InclusiveNamespaces"));
        let facts =
            check_message(&response(&good_sig("#r1"), &okta_sig, "a"), Root::Response).unwrap();
        assert!(facts.assertion_signed);
    }

    #[test]
    fn an_idp_error_status_is_named() {
        let xml = r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="r1"><samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Responder"><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:RequestDenied"/></samlp:StatusCode></samlp:Status></samlp:Response>"#;
        let err = check_message(xml, Root::Response).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the IdP refused the login with status `urn:oasis:names:tc:SAML:2.0:status:Responder / urn:oasis:names:tc:SAML:2.0:status:RequestDenied`"
        );
    }

    #[test]
    fn metadata_check_refuses_doctype_but_allows_comments() {
        assert!(reject_unsafe_constructs("<a><!-- fine --></a>").is_ok());
        assert_eq!(
            reject_unsafe_constructs("<!DOCTYPE a SYSTEM \"http://x/\"><a/>"),
            Err(GuardError::Doctype)
        );
    }
}
