//! What `portcullis idp inspect` reports about a pasted SAML response or ID token: what it
//! says, and each check the gateway makes with its verdict. Values shown are what the
//! message asserts about the user and itself; signatures, nonces and token hashes are never
//! shown.

use std::fmt::Display;

/// One check and how it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// What was checked.
    pub check: String,
    /// `Some(true)` passed, `Some(false)` failed, `None` left aside.
    pub passed: Option<bool>,
    /// Why, in words.
    pub detail: String,
}

/// The inspection of one message.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// What was inspected ("SAML response", "ID token").
    pub kind: &'static str,
    /// What the message says: (field, value).
    pub said: Vec<(String, String)>,
    /// Every check, in the gateway's order.
    pub verdicts: Vec<Verdict>,
}

impl Inspection {
    /// An empty report on a `kind`.
    pub fn new(kind: &'static str) -> Self {
        Self {
            kind,
            said: Vec::new(),
            verdicts: Vec::new(),
        }
    }

    /// Records what the message says.
    pub fn said(&mut self, field: &str, value: &str) {
        self.said.push((field.to_string(), value.to_string()));
    }

    fn verdict(&mut self, check: &str, passed: Option<bool>, detail: &str) {
        self.verdicts.push(Verdict {
            check: check.to_string(),
            passed,
            detail: detail.to_string(),
        });
    }

    /// A check that passed.
    pub fn pass(&mut self, check: &str, detail: &str) {
        self.verdict(check, Some(true), detail);
    }

    /// A check that failed.
    pub fn fail(&mut self, check: &str, detail: &str) {
        self.verdict(check, Some(false), detail);
    }

    /// A check left aside, and why.
    pub fn note(&mut self, check: &str, detail: &str) {
        self.verdict(check, None, detail);
    }

    /// Records a check's result.
    pub fn check<E: Display>(&mut self, check: &str, result: Result<(), E>) {
        match result {
            Ok(()) => self.pass(check, "ok"),
            Err(e) => self.fail(check, &e.to_string()),
        }
    }

    /// Would the gateway accept it (every check that ran passed)?
    pub fn accepted(&self) -> bool {
        !self.verdicts.is_empty() && self.verdicts.iter().all(|v| v.passed != Some(false))
    }

    /// The report for a terminal.
    pub fn render(&self) -> String {
        let mut out = format!("{}\n\nwhat it says:\n", self.kind);
        for (field, value) in &self.said {
            out.push_str(&format!("  {field:<22} {}\n", crate::idp::loggable(value)));
        }
        out.push_str("\nchecks:\n");
        for v in &self.verdicts {
            let mark = match v.passed {
                Some(true) => "PASS",
                Some(false) => "FAIL",
                None => "----",
            };
            out.push_str(&format!(
                "  {mark} {}: {}\n",
                v.check,
                crate::idp::loggable(&v.detail)
            ));
        }
        out.push_str(if self.accepted() {
            "\nverdict: the gateway would accept it\n"
        } else {
            "\nverdict: the gateway would refuse it\n"
        });
        out
    }
}
