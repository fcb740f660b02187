/* placeholder: being written */
typedef int tf__placeholder_server;
