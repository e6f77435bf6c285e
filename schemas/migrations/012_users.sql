-- Users and conversations (issue 19): the end user of each call.
--
-- llm_calls.user_id: `user.id`, `enduser.id`, `enduser.pseudo.id` or OpenLLMetry's association property
-- `user_id` (processors/core/normalize.py); empty when the span does not say. Rows stored before this
-- migration have user_id = ''.
{% call alter_table("llm_calls") %}
    ADD COLUMN user_id String CODEC(ZSTD(1)) COMMENT 'user.id / enduser.id of the call; empty when the span does not say' AFTER conversation_id{% endcall %};
