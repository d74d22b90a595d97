//! The configuration language: nginx syntax in, checked directives out.
//!
//! A file goes through `lexer` (bytes → tokens with line numbers) and `syntax` (tokens →
//! a tree of [`Directive`]s). What directives exist and what they mean is declared by the
//! modules that own them ([`directive::Spec`]); the walker in [`directive`] holds each one to
//! its declaration and hands it to its module with a [`Cx`]. Every error names `file:line`.
//! This module knows no module of sluice: the dependency goes one way, modules → config.

mod cx;
pub mod directive;
mod error;
mod file;
mod lexer;
mod syntax;
pub mod values;

use std::path::Path;

pub use cx::{Cx, MAX_TIME};
pub use error::{ConfigError, Origin};
pub use file::{MAX_FILE_SIZE, read_config_file};
pub use syntax::Directive;

/// Reads a configuration file (see [`read_config_file`]); `shown` is its name in messages.
pub fn read(path: &Path, shown: &str) -> Result<Vec<u8>, ConfigError> {
    read_config_file(path).map_err(|e| {
        ConfigError::whole_file(format!(
            "cannot read the configuration file \"{shown}\": {e}"
        ))
    })
}

/// Parses config text into its top-level directives; `file` is the name errors are reported
/// under.
pub fn parse(text: &[u8], file: &str) -> Result<Vec<Directive>, ConfigError> {
    let tokens = lexer::tokenize(text, file)?;
    syntax::parse(&tokens, file)
}
