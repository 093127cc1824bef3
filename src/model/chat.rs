//! Chat templates: the model's own Jinja template (from `tokenizer_config.json` or the GGUF
//! metadata) rendered with minijinja and Python string methods, as Hugging Face renders it.

use minijinja::{context, Environment, Error, ErrorKind};

use super::{ChatMessage, GenError};

/// A compiled chat template with the special tokens it may refer to.
pub struct ChatTemplate {
    env: Environment<'static>,
    pub bos_token: String,
    pub eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("bos_token", &self.bos_token).field("eos_token", &self.eos_token).finish()
    }
}

impl ChatTemplate {
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<ChatTemplate, GenError> {
        let mut env = Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        // Hugging Face renders templates with these Jinja2 whitespace options.
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| GenError::Invalid(format!("chat template syntax: {e}")))?;
        env.set_syntax(syntax);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| GenError::Invalid(format!("the chat template does not compile: {e}")))?;
        Ok(ChatTemplate { env, bos_token: bos_token.into(), eos_token: eos_token.into() })
    }

    /// The prompt text for `messages`, ending where the assistant's answer begins.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, GenError> {
        let t = self.env.get_template("chat").map_err(|e| GenError::Invalid(e.to_string()))?;
        t.render(context! {
            messages => minijinja::value::Serde(messages),
            add_generation_prompt => true,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        })
        .map_err(|e| GenError::Invalid(format!("rendering the chat template: {e}")))
    }
}

/// The `chat_template` of a `tokenizer_config.json`: a string, or a list of named templates of
/// which `default` is used.
pub fn template_from_config(config: &serde_json::Value) -> Option<String> {
    match config.get("chat_template")? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(list) => list
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|t| t.get("template")?.as_str().map(str::to_owned)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'].strip() + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn chatml_renders_with_python_string_methods_and_the_generation_prompt() {
        let t = ChatTemplate::new(CHATML, "<s>", "</s>").unwrap();
        let out = t.render(&[ChatMessage::new("user", "  prove it ")]).unwrap();
        assert_eq!(out, "<|im_start|>user\nprove it<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn raise_exception_in_a_template_is_an_error_with_its_message() {
        let t = ChatTemplate::new("{{ raise_exception('roles must alternate') }}", "", "").unwrap();
        assert!(t.render(&[]).unwrap_err().to_string().contains("roles must alternate"));
    }

    #[test]
    fn named_template_lists_use_the_default() {
        let cfg = serde_json::json!({"chat_template": [{"name": "tool_use", "template": "x"}, {"name": "default", "template": "y"}]});
        assert_eq!(template_from_config(&cfg).as_deref(), Some("y"));
    }
}
