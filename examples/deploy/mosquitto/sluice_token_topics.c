/*
 * A mosquitto (2.x) plugin that lets ThingsBoard MQTT devices publish to Sluice unchanged.
 *
 * A ThingsBoard device logs in with its access token as user name and publishes to
 * `v1/devices/me/telemetry` (or `.../attributes`). A broker does not tell its subscribers who
 * published a message (MQTT 3.1.1 has no field for it), so Sluice, subscribing, could not know
 * which device `me` is. This plugin does what ThingsBoard's own MQTT transport does with the
 * user name: as the broker receives such a publish, it moves it to `v1/tokens/{user name}/…`,
 * where Sluice's MQTT source (with a `tokens` file) resolves the token to the device, exactly
 * as its HTTP source does for `/api/v1/{token}/…`.
 *
 *   v1/devices/me/telemetry   from user A1_TOKEN  →  v1/tokens/A1_TOKEN/telemetry
 *   v1/devices/me/attributes  from user A1_TOKEN  →  v1/tokens/A1_TOKEN/attributes
 *
 * Other topics pass unchanged. A client may not publish to `v1/tokens/…` itself (denied), so a
 * message there always carries the user name its publisher logged in with. A publish to
 * `v1/devices/me/…` without a user name (or with one that cannot be a topic level: `/`, `+`,
 * `#`) passes unchanged, and Sluice refuses it, saying why.
 *
 * Build (Debian: `apt-get install mosquitto-dev libmosquitto-dev`):
 *   cc -shared -fPIC -O2 -o sluice_token_topics.so sluice_token_topics.c
 * Load (mosquitto.conf):
 *   plugin /path/to/sluice_token_topics.so
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

static mosquitto_plugin_id_t *plugin_id;

static const char DEVICE_ME[] = "v1/devices/me/";
static const char TOKENS[] = "v1/tokens/";

/* The APIs moved: the part of the topic after `v1/devices/me/`. */
static int moved_api(const char *api)
{
	return strcmp(api, "telemetry") == 0 || strcmp(api, "attributes") == 0;
}

static int usable_as_level(const char *name)
{
	return name != NULL && name[0] != '\0' && strpbrk(name, "/+#") == NULL;
}

static int on_message(int event, void *event_data, void *user_data)
{
	struct mosquitto_evt_message *ed = event_data;
	const char *username;
	const char *api;
	char *topic;
	size_t len;

	(void)event;
	(void)user_data;

	if (strncmp(ed->topic, TOKENS, sizeof(TOKENS) - 1) == 0) {
		return MOSQ_ERR_ACL_DENIED;
	}
	if (strncmp(ed->topic, DEVICE_ME, sizeof(DEVICE_ME) - 1) != 0) {
		return MOSQ_ERR_SUCCESS;
	}
	api = ed->topic + sizeof(DEVICE_ME) - 1;
	username = mosquitto_client_username(ed->client);
	if (!moved_api(api) || !usable_as_level(username)) {
		return MOSQ_ERR_SUCCESS;
	}
	len = strlen(TOKENS) + strlen(username) + 1 + strlen(api) + 1;
	topic = mosquitto_malloc(len);
	if (topic == NULL) {
		return MOSQ_ERR_NOMEM;
	}
	snprintf(topic, len, "%s%s/%s", TOKENS, username, api);
	mosquitto_free(ed->topic);
	ed->topic = topic;
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for (int i = 0; i < supported_version_count; i++) {
		if (supported_versions[i] == 5) {
			return 5;
		}
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **user_data, struct mosquitto_opt *opts,
			  int opt_count)
{
	(void)user_data;
	(void)opts;
	(void)opt_count;
	plugin_id = identifier;
	return mosquitto_callback_register(plugin_id, MOSQ_EVT_MESSAGE, on_message, NULL, NULL);
}

int mosquitto_plugin_cleanup(void *user_data, struct mosquitto_opt *opts, int opt_count)
{
	(void)user_data;
	(void)opts;
	(void)opt_count;
	return mosquitto_callback_unregister(plugin_id, MOSQ_EVT_MESSAGE, on_message, NULL);
}
