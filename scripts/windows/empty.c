/* The body of a DLL that only forwards (its exports are in its .def file). */
