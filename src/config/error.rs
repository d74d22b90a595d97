//! Config errors and warnings, worded the way nginx words them: `what is wrong in file:line`.

use std::fmt;

/// A config that cannot be used. Displays as nginx would: `unknown directive "foo" in proxy.conf:12`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    message: String,
    location: Option<(String, u32)>,
}

impl ConfigError {
    /// An error at `file:line`.
    pub fn at(file: &str, line: u32, message: impl Into<String>) -> Self {
        ConfigError {
            message: message.into(),
            location: Some((file.to_string(), line)),
        }
    }

    /// An error about the file as a whole (it cannot be read, it has no server block).
    pub fn whole_file(message: impl Into<String>) -> Self {
        ConfigError {
            message: message.into(),
            location: None,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some((file, line)) => write!(f, "{} in {}:{}", self.message, file, line),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Where a directive was written, for warnings and for log lines that point back at the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub line: u32,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}
